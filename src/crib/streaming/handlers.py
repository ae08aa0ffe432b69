"""From an upgraded connection to a running session: stream collection and channel layout per protocol.

SPDY remote command: the client opens one stream per channel (error, stdin, stdout, stderr, resize); the
session starts once every stream the request implies has arrived (error; stdin, stdout as requested;
stderr when requested without a tty; resize with a tty from v3 on), or fails after the creation timeout,
as kubelet's server does. WebSocket remote command: the channels exist from the start (0 stdin, 1 stdout,
2 stderr, 3 error, 4 resize); an empty message on the lowest writable channel tells the client the session
is up. Port forward: see portforward.py.

Every session ends when its work is done, when the client goes away, or after `idle_timeout` without a
byte either way; the caller then closes the connection.
"""

from __future__ import annotations

import asyncio
import math

from crib.streaming import portforward, remotecommand
from crib.streaming import websocket as ws
from crib.streaming.backend import AttachRequest, Backend, ExecRequest, PortForwardRequest
from crib.streaming.channels import Channels
from crib.streaming.sessions import Limits
from crib.streaming.spdyconn import SpdyConnection, SpdyStream
from crib.streaming.wsconn import WebSocketConnection

STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)


async def ended(conn: SpdyConnection | WebSocketConnection, idle_timeout: float) -> None:
    """Completes when the connection closed, or when nothing moved on it for idle_timeout."""
    loop = asyncio.get_running_loop()
    closed = asyncio.ensure_future(conn.wait_closed())
    try:
        if math.isinf(idle_timeout):
            await closed
            return
        while not closed.done():
            left = conn.last_activity + idle_timeout - loop.time()
            if left <= 0:
                return
            await asyncio.wait({closed}, timeout=left)
    finally:
        closed.cancel()


def _wanted(request: ExecRequest | AttachRequest, version: int) -> set[str]:
    want = {"error"}
    if request.stdin:
        want.add("stdin")
    if request.stdout:
        want.add("stdout")
    if request.stderr and not request.tty:
        want.add("stderr")
    if request.tty and version >= 3:
        want.add("resize")
    return want


class _Collector:
    """Accepts the client's streams and signals once the wanted set is complete."""

    def __init__(self, conn: SpdyConnection, want: set[str]) -> None:
        self.conn = conn
        self.want = want
        self.streams: dict[str, SpdyStream] = {}
        self.ready = asyncio.Event()

    def __call__(self, stream: SpdyStream) -> None:
        kind = stream.stream_type
        if kind not in ("error", "stdin", "stdout", "stderr", "resize") or kind in self.streams:
            self.conn.reject(stream)
            return
        self.conn.accept(stream)
        self.streams[kind] = stream
        if self.want <= self.streams.keys():
            self.ready.set()


async def spdy_remote_command(conn: SpdyConnection, request: ExecRequest | AttachRequest, protocol: str,
                              backend: Backend, limits: Limits) -> str:
    version = remotecommand.protocol_version(protocol)
    collector = _Collector(conn, _wanted(request, version))
    conn.on_stream = collector
    try:
        await asyncio.wait_for(collector.ready.wait(), limits.creation_timeout)
    except TimeoutError:
        return f"timed out waiting for the client's streams (got {sorted(collector.streams)})"
    got = collector.streams
    streams = remotecommand.Streams(
        version=version, error=got["error"], stdin=got.get("stdin"),
        stdout=got.get("stdout") if request.stdout else None,
        stderr=got.get("stderr") if request.stderr and not request.tty else None,
        resize=got.get("resize"))
    return await _run(backend, request, streams, conn, limits)


async def _run(backend: Backend, request: ExecRequest | AttachRequest, streams: remotecommand.Streams,
               conn: SpdyConnection | WebSocketConnection, limits: Limits) -> str:
    gone = asyncio.ensure_future(ended(conn, limits.idle_timeout))
    try:
        if isinstance(request, ExecRequest):
            return await remotecommand.run_exec(backend, request, streams, gone)
        return await remotecommand.run_attach(backend, request, streams, gone)
    finally:
        gone.cancel()


async def ws_remote_command(conn: WebSocketConnection, request: ExecRequest | AttachRequest, protocol: str,
                            backend: Backend, limits: Limits) -> str:
    version = remotecommand.protocol_version(protocol)
    channels = Channels(conn, base64_text=ws.is_base64(protocol), close_signal=version >= 5)
    streams = remotecommand.Streams(
        version=version, error=channels.output(ERROR),
        stdin=channels.input(STDIN) if request.stdin else None,
        stdout=channels.output(STDOUT) if request.stdout else None,
        stderr=channels.output(STDERR) if request.stderr and not request.tty else None,
        resize=channels.input(RESIZE) if request.tty else None)
    first = streams.stdout or streams.stderr or streams.error
    await first.write(b"")
    demux = asyncio.ensure_future(channels.run())
    try:
        return await _run(backend, request, streams, conn, limits)
    finally:
        demux.cancel()
        await asyncio.gather(demux, return_exceptions=True)


async def spdy_port_forward(conn: SpdyConnection, request: PortForwardRequest, backend: Backend,
                            limits: Limits, *,
                            idle_of: SpdyConnection | WebSocketConnection | None = None) -> str:
    dialer = backend.dialer(request)
    session = portforward.SpdySession(conn, dialer, where=f"pod {request.sandbox_id[:12]}",
                                      creation_timeout=limits.creation_timeout)
    conn.on_stream = session.on_stream
    try:
        return await session.run(ended(idle_of or conn, limits.idle_timeout))
    finally:
        dialer.close()


async def ws_port_forward(conn: WebSocketConnection, request: PortForwardRequest, protocol: str,
                          ports: tuple[int, ...], backend: Backend, limits: Limits) -> str:
    dialer = backend.dialer(request)
    channels = Channels(conn, base64_text=ws.is_base64(protocol), close_signal=False)
    try:
        return await portforward.run_websocket(channels, dialer, ports,
                                               where=f"pod {request.sandbox_id[:12]}",
                                               ended=ended(conn, limits.idle_timeout))
    finally:
        dialer.close()


__all__ = ["Limits", "ended", "spdy_port_forward", "spdy_remote_command", "ws_port_forward",
           "ws_remote_command"]
