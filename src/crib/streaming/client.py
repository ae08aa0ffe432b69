"""Clients of Kubernetes streaming URLs (Exec, Attach, PortForward), over SPDY/3.1 or WebSocket.

This is a stable API: `crib exec -it`, `crib attach` and `crib port-forward` use it, and so do crib's tests
and benchmarks. Everything is asyncio; the CLI calls the two helpers through asyncio.run().

Remote command (exec and attach)::

    from crib.streaming import client

    # Whole session on local fds, as `crib exec -it` does; returns the command's exit code.
    code = asyncio.run(client.run(url, stdin=0, stdout=1, stderr=2, tty=True,
                                  resize=client.terminal_sizes(0), transport="spdy"))

    # Or step by step:
    async with await client.RemoteCommand.connect(url, stdin=True, stdout=True, stderr=True) as rc:
        await rc.write(b"input")               # to the command's stdin
        await rc.close_stdin()                 # end of its input
        await rc.resize(80, 24)                # with tty=True
        chunk = await rc.read_stdout()         # b"" at the end; keep reading stdout and stderr
        out, err, code = await rc.collect()    # or read both to the end and get the exit code
        status = await rc.wait()               # Exit(code, message) from the error stream

  `stdin`/`stdout`/`stderr`/`tty` must match the Exec or Attach request that minted the URL (the server
  waits for exactly those streams). transport="websocket" speaks v5.channel.k8s.io (v4 and base64 as
  fallbacks). A stream that is not read stalls the command once its window is full: read stdout and
  stderr until b"" while you wait. wait() raises RemoteError when the server reports a failure other than
  an exit code (the command could not start, ...).

Port forward::

    async with await client.PortForward.connect(url) as pf:   # transport="spdy" or "websocket"
        conn = await pf.open(8080)       # one TCP connection to the pod's port 8080
        await conn.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
        await conn.close_write()
        body = await conn.read_all()
        await conn.close()
        conn.error                       # the server's error text for this connection, if any

    # Or listen locally like `kubectl port-forward 8080:80` until cancelled:
    await client.forward(url, [(8080, 80)], address="127.0.0.1", ready=print)

  transport="websocket" tunnels the same SPDY protocol in WebSocket messages
  (SPDY/3.1+portforward.k8s.io), as kubectl and crictl do.

Errors: UpgradeError (the server refused the URL: 404 for an unknown, used or expired one), RemoteError
(the session failed), OSError/TimeoutError (no connection). TLS: pass an ssl.SSLContext for https URLs
(tls_context() makes crictl's: its --tls-ca/--tls-cert/--tls-key), and server_name to check the server's
certificate against another name than the URL's host (crictl's --tls-sni).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import struct
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from crib.streaming import _fdio, remotecommand
from crib.streaming import websocket as ws
from crib.streaming._dial import UpgradeError, switch, upgrade
from crib.streaming.channels import Channels
from crib.streaming.spdyconn import SpdyConnection, SpdyStream
from crib.streaming.wsconn import WebSocketConnection

CLIENT_WINDOW = 4 * 1024 * 1024
ERROR_WAIT = 5.0  # after a forwarded connection ended: how long its error stream may take to close
WS_REMOTE_PROTOCOLS = [ws.V5_CHANNEL, ws.V4_CHANNEL, ws.V4_BASE64_CHANNEL]
PORT_FORWARD = "portforward.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)


class RemoteError(Exception):
    """The session failed on the server's side; the message is the server's."""


class Detached(Exception):
    """run() ended because the user typed the detach keys."""


class DetachScanner:
    """Finds the detach key sequence (crictl's and docker's ctrl-p ctrl-q) in what the user types.

    feed() returns what to send on and whether the sequence was completed. Keys that may begin the
    sequence are held back until the next key decides; a near miss sends them on unchanged, so typing
    ctrl-p alone still reaches the container (on the next key). What follows the sequence is dropped.
    """

    def __init__(self, keys: bytes) -> None:
        if not keys:
            raise ValueError("an empty detach sequence")
        self.keys = keys
        self._matched = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        pending = list(data)
        pending.reverse()  # a stack: pop() takes the next byte, a near miss pushes held bytes back
        while pending:
            byte = pending.pop()
            if byte == self.keys[self._matched]:
                self._matched += 1
                if self._matched == len(self.keys):
                    self._matched = 0
                    return bytes(out), True
                continue
            if self._matched:  # a near miss: the first held key goes out, the rest are looked at again
                held = self.keys[1:self._matched]
                out.append(self.keys[0])
                self._matched = 0
                pending.append(byte)
                pending.extend(reversed(held))
                continue
            out.append(byte)
        return bytes(out), False


def tls_context(*, ca: str = "", cert: str = "", key: str = "") -> Any:
    """The ssl.SSLContext crictl streams with, from its --tls-ca, --tls-cert and --tls-key.

    Nothing given: no verification at all, as crictl (client-go's Insecure); the URL came from the runtime
    over its local socket and its token is single-use. ca: verify the server's certificate with it, else
    with the system's CAs. cert and key (together): the client certificate a server with a CA asks for.

    Raises:
        ValueError: cert without key or the reverse.
        OSError, ssl.SSLError: a file that cannot be read or used.
    """
    import ssl

    if bool(cert) != bool(key):
        raise ValueError("--tls-cert and --tls-key go together (a client certificate and its key)")
    if not (ca or cert):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=ca or None)
    if cert:
        context.load_cert_chain(cert, key)
    return context


def parse_detach_keys(spec: str) -> bytes:
    """docker's and crictl's notation: comma-separated keys, each one character or ctrl-<key>
    ("ctrl-p,ctrl-q", "ctrl-@", "ctrl-[,q"); "" means no detaching.

    Raises:
        ValueError: a key that is neither.
    """
    out = bytearray()
    for key in filter(None, (k.strip() for k in spec.split(","))):
        if len(key) == 1:
            out.append(ord(key))
        elif key.lower().startswith("ctrl-") and len(key) == 6:
            code = ord(key[5].lower() if key[5].isalpha() else key[5])
            if code == ord("@"):
                out.append(0)
            elif ord("a") <= code <= ord("z"):
                out.append(code - ord("a") + 1)
            elif ord("[") <= code <= ord("_"):
                out.append(code - ord("[") + 27)
            else:
                raise ValueError(f"unknown key {key!r}: use a-z, @, [, \\, ], ^ or _ after ctrl-")
        else:
            raise ValueError(f"unknown key {key!r}: use one character or ctrl-<key>, comma-separated")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Exit:
    """How a remote command ended: its exit code (0 = success) and the server's message."""

    code: int
    message: str = ""


def decode_status(version: int, payload: bytes) -> Exit:
    """The outcome carried by the error stream (see remotecommand.status).

    Raises:
        RemoteError: a failure that is not an exit code.
    """
    text = payload.decode(errors="replace")
    if version < 4:
        if not text:
            return Exit(0)
        if "exit code" in text or "exit status" in text:
            tail = text.rsplit(" ", 1)[-1]
            if tail.isdigit():
                return Exit(int(tail), text)
        raise RemoteError(text)
    if not text:
        return Exit(0)
    try:
        status = json.loads(text)
    except ValueError:
        raise RemoteError(f"unreadable status from the server: {text[:200]}") from None
    if status.get("status") == "Success":
        return Exit(0)
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                return Exit(int(cause.get("message", "1")), status.get("message", ""))
    raise RemoteError(status.get("message") or text)


# ------------------------------------------------------------------------------------------ remote command


class RemoteCommand:
    """One exec or attach session (see the module note); make it with connect()."""

    def __init__(self, protocol: str, *, closer: Callable[[], None]) -> None:
        self.protocol = protocol
        self.version = remotecommand.protocol_version(protocol)
        self._closer = closer
        self._stdin: Any = None
        self._stdout: Any = None
        self._stderr: Any = None
        self._error: Any = None
        self._resize: Any = None
        self._websocket: WebSocketConnection | None = None
        self._demux: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, *, stdin: bool = False, stdout: bool = True, stderr: bool = True,
                      tty: bool = False, transport: str = "spdy", ssl_context: Any = None,
                      timeout: float = 30.0, protocols: Sequence[str] | None = None,
                      server_name: str | None = None) -> RemoteCommand:
        """Open the session of an Exec or Attach URL (flags as in the request that minted it).

        Raises:
            UpgradeError: the server refused the URL.
        """
        if transport == "websocket":
            return await cls._websocket_session(url, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty,
                                                ssl_context=ssl_context, timeout=timeout,
                                                protocols=list(protocols or WS_REMOTE_PROTOCOLS),
                                                server_name=server_name)
        if transport != "spdy":
            raise ValueError(f"transport {transport!r} is not spdy or websocket")
        raw, chosen, leftover = await upgrade(url, websocket=False, ssl_context=ssl_context, timeout=timeout,
                                              protocols=list(protocols or remotecommand.SPDY_PROTOCOLS),
                                              server_name=server_name)
        conn = SpdyConnection(server=False, recv_window=CLIENT_WINDOW)
        switch(raw, conn, leftover)
        self = cls(chosen, closer=conn.close)
        self._error = conn.open_stream({"streamtype": "error"})
        if stdin:
            self._stdin = conn.open_stream({"streamtype": "stdin"})
        if stdout:
            self._stdout = conn.open_stream({"streamtype": "stdout"})
        if stderr and not tty:
            self._stderr = conn.open_stream({"streamtype": "stderr"})
        if tty and self.version >= 3:
            self._resize = conn.open_stream({"streamtype": "resize"})
        try:
            async with asyncio.timeout(timeout):
                for stream in (self._error, self._stdin, self._stdout, self._stderr, self._resize):
                    if stream is not None:
                        await stream.wait_reply()
        except BaseException:
            conn.abort()
            raise
        return self

    @classmethod
    async def _websocket_session(cls, url: str, *, stdin: bool, stdout: bool, stderr: bool, tty: bool,
                                 ssl_context: Any, timeout: float, protocols: list[str],
                                 server_name: str | None) -> RemoteCommand:
        raw, chosen, leftover = await upgrade(url, websocket=True, protocols=protocols,
                                              ssl_context=ssl_context, timeout=timeout,
                                              server_name=server_name)
        conn = WebSocketConnection(client=True)
        switch(raw, conn, leftover)
        self = cls(chosen, closer=conn.close_nowait)
        channels = Channels(conn, base64_text=ws.is_base64(chosen), close_signal=self.version >= 5)
        self._websocket = conn
        self._error = channels.input(ERROR)
        self._stdout = channels.input(STDOUT) if stdout else None
        self._stderr = channels.input(STDERR) if stderr and not tty else None
        self._stdin = channels.output(STDIN) if stdin else None
        self._resize = channels.output(RESIZE) if tty else None
        self._demux = asyncio.ensure_future(channels.run())
        return self

    async def write(self, data: bytes) -> None:
        """Send data to the command's stdin."""
        if self._stdin is None:
            raise ValueError("the session was opened without stdin")
        await self._stdin.write(data)

    async def close_stdin(self) -> None:
        """End the command's input (SPDY FIN; WebSocket v5 CLOSE signal)."""
        if self._stdin is None:
            return
        if self._websocket is not None:
            if self.version >= 5:
                with contextlib.suppress(ConnectionError):
                    await self._websocket.send(ws.BINARY, bytes([ws.STREAM_CLOSE, STDIN]))
            return
        self._stdin.close()

    async def resize(self, width: int, height: int) -> None:
        """Tell the terminal its new size (sessions with tty=True)."""
        if self._resize is not None:
            await self._resize.write(json.dumps({"Width": width, "Height": height}).encode())

    async def read_stdout(self) -> bytes:
        """The next chunk of the command's stdout; b"" at its end."""
        return await self._stdout.read() if self._stdout is not None else b""

    async def read_stderr(self) -> bytes:
        """The next chunk of the command's stderr; b"" at its end (or without a stderr stream)."""
        return await self._stderr.read() if self._stderr is not None else b""

    async def wait(self) -> Exit:
        """Wait for the server's final status.

        Raises:
            RemoteError: the session failed for another reason than the command's exit code.
        """
        parts = []
        with contextlib.suppress(ConnectionError):
            while chunk := await self._error.read():
                parts.append(chunk)
        if not parts and self.version >= 4:
            raise RemoteError("the session ended without a status from the server (it gave up or went away)")
        return decode_status(self.version, b"".join(parts))

    async def collect(self) -> tuple[bytes, bytes, int]:
        """Read stdout and stderr to their end, then the status: (stdout, stderr, exit code)."""
        async def drain(read: Callable[[], Any]) -> bytes:
            parts = []
            with contextlib.suppress(ConnectionError):
                while chunk := await read():
                    parts.append(chunk)
            return b"".join(parts)

        out, err = await asyncio.gather(drain(self.read_stdout), drain(self.read_stderr))
        return out, err, (await self.wait()).code

    async def close(self) -> None:
        """Close the connection (the server ends the session and kills a command still running)."""
        self._closer()
        if self._demux is not None:
            self._demux.cancel()
            await asyncio.gather(self._demux, return_exceptions=True)

    async def __aenter__(self) -> RemoteCommand:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


async def terminal_sizes(fd: int) -> AsyncIterator[tuple[int, int]]:
    """The terminal size of fd now, then after every SIGWINCH: the `resize` argument of run()."""
    from crib.system.tty import get_winsize  # a local terminal only matters to the CLI

    changed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGWINCH, changed.set)
    try:
        while True:
            with contextlib.suppress(OSError):
                yield get_winsize(fd)
            await changed.wait()
            changed.clear()
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)


async def run(url: str, *, stdin: int | None = None, stdout: int | None = 1, stderr: int | None = 2,
              tty: bool = False, resize: AsyncIterator[tuple[int, int]] | None = None,
              transport: str = "spdy", ssl_context: Any = None, timeout: float = 30.0,
              server_name: str | None = None, detach_keys: bytes = b"") -> int:
    """Run a whole exec or attach session on local file descriptors; returns the command's exit code.

    stdin is read until its end (then the remote stdin is closed); None means no stdin. With tty=True the
    caller puts the local terminal in raw mode and gives terminal_sizes(fd) as resize. detach_keys (see
    DetachScanner) typed on stdin end the session from this side: the connection is closed and Detached
    raised (an attached container keeps running; an exec'd command ends with its session).

    Raises:
        UpgradeError, RemoteError: see the module note.
        Detached: the detach keys were typed.
    """
    session = await RemoteCommand.connect(url, stdin=stdin is not None, stdout=stdout is not None,
                                          stderr=stderr is not None and not tty, tty=tty, transport=transport,
                                          ssl_context=ssl_context, timeout=timeout, server_name=server_name)
    tasks: list[asyncio.Future[Any]] = []
    scanner = DetachScanner(detach_keys) if detach_keys else None
    detached = asyncio.Event()

    async def pump_out(read: Callable[[], Any], fd: int) -> None:
        _fdio.set_nonblocking(fd)
        while chunk := await read():
            await _fdio.write(fd, chunk)

    async def pump_in(fd: int) -> None:
        _fdio.set_nonblocking(fd)
        with contextlib.suppress(ConnectionError):
            while chunk := await _fdio.read(fd, 65536):
                hit = False
                if scanner is not None:
                    chunk, hit = scanner.feed(chunk)
                if chunk:
                    await session.write(chunk)
                if hit:
                    detached.set()
                    return
            await session.close_stdin()

    async def pump_resize(sizes: AsyncIterator[tuple[int, int]]) -> None:
        with contextlib.suppress(ConnectionError):
            async for width, height in sizes:
                await session.resize(width, height)

    try:
        outs = []
        if stdout is not None:
            outs.append(asyncio.ensure_future(pump_out(session.read_stdout, stdout)))
        if stderr is not None and not tty:
            outs.append(asyncio.ensure_future(pump_out(session.read_stderr, stderr)))
        if stdin is not None:
            tasks.append(asyncio.ensure_future(pump_in(stdin)))
        if resize is not None:
            tasks.append(asyncio.ensure_future(pump_resize(resize)))
        output: asyncio.Future[Any] = asyncio.gather(*outs)
        detach: asyncio.Future[Any] = asyncio.ensure_future(detached.wait())
        tasks.append(detach)
        await asyncio.wait([output, detach], return_when=asyncio.FIRST_COMPLETED)
        if detached.is_set():
            output.cancel()
            await asyncio.gather(output, return_exceptions=True)
            raise Detached()
        await output
        return (await session.wait()).code
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()


# -------------------------------------------------------------------------------------------- port forward


class ForwardedConnection:
    """One TCP connection to a pod's port through a port forward session."""

    def __init__(self, port: int, data: SpdyStream, error: SpdyStream) -> None:
        self.port = port
        self._data = data
        self._error = error
        self._error_task = asyncio.ensure_future(error.read_all())
        self.error = ""

    async def read(self) -> bytes:
        """The next bytes from the pod; b"" once it closed its side (or the connection failed: see error
        after close())."""
        try:
            return await self._data.read()
        except ConnectionError:
            return b""

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    async def _collect_error(self) -> None:
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            raw = await asyncio.wait_for(asyncio.shield(self._error_task), ERROR_WAIT)
            self.error = raw.decode(errors="replace")

    async def write(self, data: bytes) -> None:
        await self._data.write(data)

    async def close_write(self) -> None:
        """Half-close: the pod sees end of input, its answer still comes back."""
        self._data.close()

    async def close(self) -> None:
        """Drop the connection both ways (as kubectl does once either side ended), then collect the
        server's error text for it into `error` ("" when none)."""
        self._data.reset()
        await self._collect_error()
        self._error_task.cancel()
        self._error.reset()


class PortForward:
    """A port forward session; open() one connection per pod port wanted (see the module note)."""

    def __init__(self, conn: SpdyConnection, closer: Callable[[], None]) -> None:
        self._conn = conn
        self._closer = closer
        self._next_request = 0

    @classmethod
    async def connect(cls, url: str, *, transport: str = "spdy", ssl_context: Any = None,
                      timeout: float = 30.0, server_name: str | None = None) -> PortForward:
        """Open the session of a PortForward URL.

        Raises:
            UpgradeError: the server refused the URL.
        """
        websocket = transport == "websocket"
        if transport not in ("spdy", "websocket"):
            raise ValueError(f"transport {transport!r} is not spdy or websocket")
        protocols = [ws.SPDY_TUNNEL_PREFIX + PORT_FORWARD] if websocket else [PORT_FORWARD]
        raw, chosen, leftover = await upgrade(url, websocket=websocket, protocols=protocols,
                                              ssl_context=ssl_context, timeout=timeout,
                                              server_name=server_name)
        if chosen not in protocols:
            raw.close()
            raise RemoteError(f"the server chose protocol {chosen!r}, not {protocols[0]}")
        conn = SpdyConnection(server=False, recv_window=CLIENT_WINDOW)
        if not websocket:
            switch(raw, conn, leftover)
            return cls(conn, conn.close)
        carrier = WebSocketConnection(client=True)
        tunnel = carrier.start_tunnel()
        switch(raw, carrier, leftover)
        tunnel.set_protocol(conn)
        conn.connection_made(tunnel)
        carrier.replay_into_tunnel()  # the server's first frames may have come with its 101

        def close() -> None:
            conn.close()
            carrier.close_nowait()

        return cls(conn, close)

    async def open(self, port: int) -> ForwardedConnection:
        """A new connection to the pod's port (error and data streams, as kubectl makes them)."""
        self._next_request += 1
        headers = {"port": str(port), "requestid": str(self._next_request)}
        error = self._conn.open_stream({"streamtype": "error", **headers})
        error.close()  # we never write on it
        data = self._conn.open_stream({"streamtype": "data", **headers})
        await data.wait_reply()
        return ForwardedConnection(port, data, error)

    async def close(self) -> None:
        self._closer()

    async def __aenter__(self) -> PortForward:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


async def forward(url: str, ports: Sequence[tuple[int, int]], *, address: str = "127.0.0.1",
                  transport: str = "spdy", ssl_context: Any = None, server_name: str | None = None,
                  ready: Callable[[list[tuple[int, int]]], None] | None = None) -> None:
    """Listen on local ports and forward every connection to the pod's port, until cancelled.

    Args:
        ports: (local, remote) pairs; local 0 picks a free port.
        ready: called with the (local, remote) pairs actually bound, once listening.
    """
    session = await PortForward.connect(url, transport=transport, ssl_context=ssl_context,
                                        server_name=server_name)
    loop = asyncio.get_running_loop()
    servers = []

    async def serve(remote: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = await session.open(remote)

        async def up() -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(65536):
                    await conn.write(chunk)
                await conn.close_write()

        pump = asyncio.ensure_future(up())
        try:
            while chunk := await conn.read():
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            pump.cancel()
            await conn.close()
            writer.close()
        if conn.error:
            print(f"port {remote}: {conn.error}", file=sys.stderr)

    try:
        bound = []
        for local, remote in ports:
            server = await asyncio.start_server(
                lambda r, w, remote=remote: serve(remote, r, w), address, local)  # type: ignore[misc]
            servers.append(server)
            bound.append((server.sockets[0].getsockname()[1], remote))
        if ready is not None:
            ready(bound)
        await loop.create_future()  # until cancelled
    finally:
        for server in servers:
            server.close()
        await session.close()


def port_prefix(data: bytes) -> tuple[int, bytes]:
    """Split the little-endian port a WebSocket port-forward channel starts with from the data after it."""
    return struct.unpack("<H", data[:2])[0], data[2:]


__all__ = ["Exit", "ForwardedConnection", "PortForward", "RemoteCommand", "RemoteError", "UpgradeError",
           "decode_status", "forward", "port_prefix", "run", "terminal_sizes"]
