"""What the SPDY and WebSocket connections share: write backpressure, and a byte pipe over WebSocket.

Backpressure: asyncio tells a protocol when its transport's write buffer crosses the high-water mark
(pause_writing) and when it drained below the low one (resume_writing). Every writer awaits drain() before
it writes, so a stalled peer stops the producers (a process's stdout pipe, a pod socket) instead of growing
crib's memory: at most the high-water mark plus one chunk is ever buffered per connection.

TunnelTransport carries a SPDY connection inside binary WebSocket messages (the subprotocol
`SPDY/3.1+portforward.k8s.io` that kubectl and crictl use for port forwarding over WebSocket): each write
is one message, and whatever messages arrive are fed to the SPDY protocol as a byte stream.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024


class ConnectionClosed(ConnectionError):
    """The connection is gone (the peer closed it, it was reset, or it was closed here)."""


class Backpressure:
    """pause_writing/resume_writing bookkeeping and drain(), for asyncio protocols (see the module note)."""

    def __init__(self) -> None:
        self._paused = False
        self._drainers: collections.deque[asyncio.Future[None]] = collections.deque()
        self._lost: BaseException | None = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        while self._drainers:
            waiter = self._drainers.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _wake_drainers(self, exc: BaseException) -> None:
        self._lost = exc
        while self._drainers:
            waiter = self._drainers.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    async def drain(self) -> None:
        """Return once the transport accepts more data; raise ConnectionClosed if it is gone."""
        if self._lost is not None:
            raise ConnectionClosed(str(self._lost)) from self._lost
        if not self._paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drainers.append(waiter)
        await waiter


class TunnelTransport(asyncio.Transport):
    """A transport for a SPDY protocol whose bytes travel in binary messages of a WebSocket connection.

    The WebSocket side calls feed() with each message and lost() at its end; the SPDY side writes, and is
    paused when the WebSocket transport is.
    """

    def __init__(self, ws: Any) -> None:
        super().__init__()
        self._ws = ws  # wsconn.WebSocketConnection; Any to keep the import graph flat
        self._protocol: asyncio.BaseProtocol | None = None
        self._closing = False
        self._early: list[bytes] = []  # fed before the protocol was set up: delivered by replay()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._ws.transport.get_extra_info(name, default) if self._ws.transport else default

    def is_closing(self) -> bool:
        return self._closing or self._ws.closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.is_closing():
            self._ws.send_nowait(2, bytes(data))  # BINARY

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._ws.close_nowait()

    def abort(self) -> None:
        self._closing = True
        self._ws.abort()

    def pause_reading(self) -> None:
        self._ws.pause_reading()

    def resume_reading(self) -> None:
        self._ws.resume_reading()

    def is_reading(self) -> bool:
        return not self._closing

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # the WebSocket transport's own limits apply

    def get_write_buffer_size(self) -> int:
        transport = self._ws.transport
        return int(transport.get_write_buffer_size()) if transport else 0

    def can_write_eof(self) -> bool:
        return False

    # --- called by the WebSocket side

    def feed(self, data: bytes) -> None:
        if self._protocol is None:
            # The bytes that came with the 101 answer (the peer's first SETTINGS and WINDOW_UPDATE) reach
            # the tunnel before its SPDY connection exists; dropping them made the client believe the
            # server ignores flow control, so it never granted credit and a transfer stopped at one window.
            self._early.append(data)
        elif not self._closing:
            self._protocol.data_received(data)  # type: ignore[attr-defined]

    def replay(self) -> None:
        """Deliver what was fed before the protocol was set (call after its connection_made)."""
        early, self._early = self._early, []
        for data in early:
            self.feed(data)

    def paused(self) -> None:
        if self._protocol is not None:
            self._protocol.pause_writing()

    def resumed(self) -> None:
        if self._protocol is not None:
            self._protocol.resume_writing()

    def lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.connection_lost(exc)


LINGER = 5.0  # after our last byte: how long the peer may take to close its side


def linger_close(transport: asyncio.BaseTransport) -> None:
    """Close gracefully: send FIN once everything buffered is out, keep reading (and dropping) what the
    peer still sends, and close when it closes too, or after LINGER.

    A plain close() with unread input makes the kernel answer with RST, and a peer still reading the tail
    of a large output then loses it ("connection reset by peer"): window updates and pings from the
    client are exactly such unread input.
    """
    if transport.is_closing():
        return
    try:
        half_close = isinstance(transport, asyncio.WriteTransport) and transport.can_write_eof()
    except NotImplementedError:
        half_close = False
    if half_close:
        assert isinstance(transport, asyncio.WriteTransport)
        try:
            transport.write_eof()
        except OSError:  # the peer is already gone (ENOTCONN): nothing to linger for
            transport.close()
            return
        asyncio.get_running_loop().call_later(LINGER, transport.close)
    else:
        transport.close()


def switch(transport: asyncio.Transport, protocol: asyncio.Protocol, leftover: bytes) -> None:
    """Hand an upgraded connection (reading paused) to its new protocol, with the bytes already read."""
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if leftover:
        protocol.data_received(leftover)
    transport.resume_reading()


__all__ = ["HIGH_WATER", "LINGER", "LOW_WATER", "Backpressure", "ConnectionClosed", "TunnelTransport",
           "linger_close", "switch"]
