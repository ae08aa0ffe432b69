"""The connection multiplexer NRI runs over: several logical byte streams on one socket.

Wire format (containerd/nri pkg/net/multiplex): a frame is an 8-byte header - logical connection id (u32,
big endian) and payload length (u32) - followed by the payload, at most one ttrpc message (10 + 4 MiB
bytes) long. Payloads of one connection concatenate into its byte stream; a larger write is split into
several frames (crib writes at most WRITE_CHUNK bytes per frame). Opening a connection sends nothing: both
ends simply use the same id. NRI uses id 1 for the plugin's service (the runtime calls the plugin) and id
2 for the runtime's service (the plugin calls the runtime); id 0 is reserved.

Failure isolation: a frame longer than the limit, or a connection whose unread data grows past
MAX_BUFFERED (a peer flooding us), is a ProtocolError that closes this multiplexer and every stream on it,
and nothing else. Frames for a connection nobody opened are dropped, as upstream does.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable

from crib.nri.ttrpc import HEADER as TTRPC_HEADER
from crib.nri.ttrpc import MAX_DATA, Closed, ProtocolError

FRAME = struct.Struct(">II")
MAX_PAYLOAD = TTRPC_HEADER.size + MAX_DATA
MAX_BUFFERED = 4 * MAX_PAYLOAD
# Frames crib writes carry at most this much: a Go peer reads each frame whole into its ttrpc reader's
# 4 KiB buffer and fails with ENOMEM ("cannot allocate memory") on a larger one.
WRITE_CHUNK = 4096
PLUGIN_SERVICE_CONN = 1
RUNTIME_SERVICE_CONN = 2


class Conn:
    """One logical connection: a byte stream (ttrpc.Stream) carried in frames of its id."""

    def __init__(self, mux: Mux, conn_id: int) -> None:
        self._mux = mux
        self.id = conn_id
        self._buffer = bytearray()
        self._more = asyncio.Event()

    def _feed(self, payload: bytes) -> None:
        self._buffer += payload
        if len(self._buffer) > MAX_BUFFERED:
            raise ProtocolError(f"multiplexed connection {self.id}: more than {MAX_BUFFERED} bytes unread")
        self._more.set()

    def _wake(self) -> None:
        self._more.set()

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if self._mux.closed:
                raise Closed(self._mux.reason or "connection closed")
            self._more.clear()
            await self._more.wait()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def send(self, data: bytes) -> None:
        await self._mux.write(self.id, data)


class Mux:
    """Multiplexed connections over one stream socket; run() reads the trunk until it ends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._conns: dict[int, Conn] = {}
        self.closed = False
        self.reason = ""
        self._on_close: list[Callable[[], None]] = []

    def open(self, conn_id: int) -> Conn:
        if conn_id == 0:
            raise ValueError("multiplexed connection id 0 is reserved")
        conn = self._conns.get(conn_id)
        if conn is None:
            conn = self._conns[conn_id] = Conn(self, conn_id)
        return conn

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call back (once) when the trunk closes, for whatever reason."""
        if self.closed:
            callback()
        else:
            self._on_close.append(callback)

    async def write(self, conn_id: int, data: bytes) -> None:
        if self.closed:
            raise Closed(self.reason or "connection closed")
        view = memoryview(data)
        for start in range(0, max(len(view), 1), WRITE_CHUNK):
            chunk = view[start:start + WRITE_CHUNK]
            self._writer.write(FRAME.pack(conn_id, len(chunk)) + bytes(chunk))
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self.close(f"write failed: {exc}")
            raise Closed(self.reason) from exc

    async def run(self) -> None:
        """Demultiplex until the peer hangs up (returns) or breaks the framing (ProtocolError)."""
        try:
            while True:
                try:
                    header = await self._reader.readexactly(FRAME.size)
                except asyncio.IncompleteReadError:
                    self.close("peer closed the connection")
                    return
                conn_id, length = FRAME.unpack(header)
                if length > MAX_PAYLOAD:
                    raise ProtocolError(f"multiplexed frame of {length} bytes exceeds {MAX_PAYLOAD}")
                try:
                    payload = await self._reader.readexactly(length) if length else b""
                except asyncio.IncompleteReadError:
                    self.close("peer closed the connection mid-frame")
                    return
                conn = self._conns.get(conn_id)
                if conn is not None:
                    conn._feed(payload)
        except ProtocolError as exc:
            self.close(f"protocol error: {exc}")
            raise
        except (ConnectionError, OSError) as exc:
            self.close(f"read failed: {exc}")
        finally:
            self.close("connection closed")

    def close(self, reason: str = "closed") -> None:
        """Close the socket and wake every reader (idempotent); the first reason sticks."""
        if self.closed:
            return
        self.closed, self.reason = True, reason
        with contextlib.suppress(Exception):
            self._writer.close()
        for conn in self._conns.values():
            conn._wake()
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()


__all__ = ["MAX_PAYLOAD", "PLUGIN_SERVICE_CONN", "RUNTIME_SERVICE_CONN", "Conn", "Mux"]
