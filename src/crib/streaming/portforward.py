"""Port forward sessions: TCP connections to a pod's ports, carried over SPDY stream pairs or WebSocket
channel pairs.

SPDY (`portforward.k8s.io`): every forwarded connection is two streams, `streamType: error` and
`streamType: data`, with the same `port` and `requestID` headers (clients too old to send a requestID get
one derived from the stream ids, as kubelet does: the error stream's id, the data stream's id minus 2).
Once both are there the pod's port is dialled from inside its network namespace (Backend.dialer) and bytes
flow both ways: the client's FIN on the data stream half-closes the pod connection, the pod's EOF is our FIN.
A failure (refused, pod gone) is written as text on the error stream; it ends that pair, never the session.
A pair left incomplete past the creation timeout is reset.

WebSocket (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`): the ports come in the URL (`?port=80&port=443`),
one connection per port, on channels 2i (data) and 2i+1 (error); both first carry the port as a
little-endian uint16. The session ends when every port's connection has ended. kubectl and crictl instead
tunnel the SPDY protocol itself in WebSocket messages (`SPDY/3.1+portforward.k8s.io`, see server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable

from crib import log
from crib.errors import CribError
from crib.streaming import spdy
from crib.streaming.backend import Dialer
from crib.streaming.remotecommand import Input, Output
from crib.streaming.spdyconn import SpdyConnection, SpdyStream

_log = log.get(__name__)

PROTOCOL = "portforward.k8s.io"
RECV_CHUNK = 256 * 1024
MAX_PAIRS = 10_000  # streams in flight per session; more are refused
CLOSE_GRACE = 1.0  # after one direction ended: how long the other may take to finish


def parse_port(text: str) -> int:
    """A port from a header or query value.

    Raises:
        ValueError: not a number between 1 and 65535 (the message says so).
    """
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not between 1 and 65535")
    return port


async def _up(data: Input, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while chunk := await data.read():
        await loop.sock_sendall(sock, chunk)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


async def _down(sock: socket.socket, data: Output) -> None:
    loop = asyncio.get_running_loop()
    buf = bytearray(RECV_CHUNK)  # reused: write() copies each chunk into its frame
    view = memoryview(buf)
    while n := await loop.sock_recv_into(sock, buf):
        await data.write(view[:n])
    data.close()


async def forward(dialer: Dialer, port: int, data_in: Input, data_out: Output, error: Output,
                  where: str) -> None:
    """Connect to port and copy both ways until both directions ended (or one failed)."""
    try:
        sock = await dialer.dial(port)
    except (OSError, CribError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        with contextlib.suppress(ConnectionError):
            await error.write(f"error forwarding port {port} to {where}: {reason}".encode())
        data_out.close()
        error.close()
        return
    up = asyncio.ensure_future(_up(data_in, sock))
    down = asyncio.ensure_future(_down(sock, data_out))
    try:
        # The client's FIN only half-closes the pod connection: its answer still flows back. The pod's end
        # (or a reset on either side) ends the pair, after a second's grace for the other way (as socat).
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if down.done() or up.cancelled() or up.exception() is not None:
            await asyncio.wait({up, down}, timeout=CLOSE_GRACE)
        else:
            await asyncio.wait({down})
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        sock.close()
        data_out.close()
        error.close()


class SpdySession:
    """Pairs the streams of one SPDY port forward connection and forwards each pair."""

    def __init__(self, conn: SpdyConnection, dialer: Dialer, *, where: str, creation_timeout: float) -> None:
        self.conn = conn
        self.dialer = dialer
        self.where = where
        self.creation_timeout = creation_timeout
        self._pending: dict[str, dict[str, SpdyStream]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.pairs = 0

    def on_stream(self, stream: SpdyStream) -> None:
        kind = stream.stream_type
        if kind not in ("data", "error") or len(self._pending) + len(self._tasks) >= MAX_PAIRS:
            known = kind in ("data", "error")
            self.conn.reject(stream, spdy.REFUSED_STREAM if known else spdy.PROTOCOL_ERROR)
            return
        self.conn.accept(stream)
        request_id = stream.headers.get("requestid", "")
        if not request_id:
            request_id = str(stream.id if kind == "error" else stream.id - 2)
        pair = self._pending.setdefault(request_id, {})
        if kind in pair:
            stream.reset(spdy.PROTOCOL_ERROR)
            return
        pair[kind] = stream
        if len(pair) == 2:
            del self._pending[request_id]
            self._start(pair["data"], pair["error"])
        elif len(pair) == 1:
            self._spawn(self._expire(request_id, stream))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, request_id: str, stream: SpdyStream) -> None:
        await asyncio.sleep(self.creation_timeout)
        pair = self._pending.get(request_id)
        if pair is not None and pair.get(stream.stream_type) is stream:
            del self._pending[request_id]
            stream.reset(spdy.CANCEL)

    def _start(self, data: SpdyStream, error: SpdyStream) -> None:
        self.pairs += 1
        try:
            port = parse_port(data.headers.get("port", "") or error.headers.get("port", ""))
        except ValueError as exc:
            self._spawn(_refuse(data, error, f"invalid port header: {exc}"))
            return
        self._spawn(forward(self.dialer, port, data, data, error, self.where))

    async def run(self, ended: Awaitable[None]) -> str:
        """Serve until the client goes away (or the session idles out); returns how it ended."""
        await ended
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return f"{self.pairs} connections"


async def _refuse(data: SpdyStream, error: SpdyStream, message: str) -> None:
    with contextlib.suppress(ConnectionError):
        await error.write(message.encode())
    error.close()
    data.close()


async def run_websocket(channels: object, dialer: Dialer, ports: tuple[int, ...], *, where: str,
                        ended: Awaitable[None]) -> str:
    """Forward one connection per port over WebSocket channels (see the module note)."""
    from crib.streaming.channels import Channels  # the SPDY path never needs it

    assert isinstance(channels, Channels)
    work = []
    for i, port in enumerate(ports):
        data_in, data_out, error = channels.input(2 * i), channels.output(2 * i), channels.output(2 * i + 1)
        prefix = struct.pack("<H", port)
        await data_out.write(prefix)
        await error.write(prefix)
        work.append(asyncio.ensure_future(forward(dialer, port, data_in, data_out, error, where)))
    demux = asyncio.ensure_future(channels.run())
    ended_task = asyncio.ensure_future(ended)
    try:
        all_done = asyncio.ensure_future(_all(work))
        await asyncio.wait({all_done, ended_task}, return_when=asyncio.FIRST_COMPLETED)
        all_done.cancel()
        return "client gone" if ended_task.done() else f"{len(ports)} ports done"
    finally:
        for task in (*work, demux, ended_task):
            task.cancel()
        await asyncio.gather(*work, demux, ended_task, return_exceptions=True)


async def _all(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["PROTOCOL", "SpdySession", "forward", "parse_port", "run_websocket"]
