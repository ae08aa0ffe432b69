"""A WebSocket connection on asyncio, for both ends: whole messages in, messages out, pings answered.

Incoming messages queue until receive() takes them; once more than `max_buffer` bytes wait, the socket is
not read until the consumer catches up (WebSocket has no flow control of its own: TCP is the brake).
Outgoing messages go out at once, and send() waits on the transport's backpressure (_transport.py).
A CLOSE is answered with a CLOSE and the socket is closed after it; a PING with a PONG.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os

from crib.streaming import websocket as ws
from crib.streaming._transport import (
    HIGH_WATER,
    LOW_WATER,
    Backpressure,
    ConnectionClosed,
    TunnelTransport,
    linger_close,
)

MAX_BUFFER = 1024 * 1024


class WebSocketConnection(Backpressure, asyncio.Protocol):
    """One end of a WebSocket connection (see the module note).

    Args:
        client: True on the client end (frames are masked).
        max_message: the largest message accepted.
    """

    def __init__(self, *, client: bool, max_message: int = ws.MAX_MESSAGE,
                 max_buffer: int = MAX_BUFFER) -> None:
        Backpressure.__init__(self)
        self.client = client
        self.transport: asyncio.Transport | None = None
        self._decoder = ws.Decoder(masked=not client, max_message=max_message)
        self._queue: collections.deque[ws.Message] = collections.deque()
        self._queued = 0
        self._max_buffer = max_buffer
        self._reader: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._user_paused = False
        self._close_sent = False
        self.close_code: int | None = None
        self.tunnel: TunnelTransport | None = None
        loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[None] = loop.create_future()
        self.last_activity = loop.time()

    # ---------------------------------------------------------------------------------- asyncio plumbing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)

    def data_received(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        try:
            messages = self._decoder.feed(data)
        except ws.ProtocolError as exc:
            self.close_nowait(exc.code, str(exc)[:120])
            return
        for message in messages:
            if message.opcode == ws.PING:
                self._write(ws.PONG, message.payload)
            elif message.opcode == ws.PONG:
                continue
            elif message.opcode == ws.CLOSE:
                self.close_code = ws.parse_close(message.payload)[0]
                self.close_nowait(ws.CLOSE_NORMAL)
                return
            elif self.tunnel is not None:
                self.tunnel.feed(message.payload)
            else:
                self._queue.append(message)
                self._queued += len(message.payload)
        if self._queued > self._max_buffer:
            self._pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed.done():
            return
        self._wake_drainers(exc or ConnectionClosed("WebSocket connection closed"))
        if self.tunnel is not None:
            self.tunnel.lost(exc)
        self._closed.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.tunnel is not None:
            self.tunnel.paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.tunnel is not None:
            self.tunnel.resumed()

    # ------------------------------------------------------------------------------------------ reading

    def _wake(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()

    def pause_reading(self) -> None:
        """Stop reading the socket until resume_reading() (used by a tunnelled SPDY connection)."""
        self._user_paused = True
        self._pause_reading()

    def resume_reading(self) -> None:
        self._user_paused = False
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        if self._reading_paused and not self._user_paused and self._queued <= self._max_buffer // 2 \
                and self.transport is not None and not self.transport.is_closing():
            self._reading_paused = False
            self.transport.resume_reading()

    async def receive(self) -> ws.Message | None:
        """The next data message; None once the connection closed."""
        while not self._queue:
            if self._closed.done() or self._close_sent:
                return None
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        message = self._queue.popleft()
        self._queued -= len(message.payload)
        self._maybe_resume()
        return message

    # ------------------------------------------------------------------------------------------ writing

    def _write(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self._close_sent:
            return
        mask = os.urandom(4) if self.client else None
        if mask is None:
            transport.write(ws.frame_header(opcode, len(payload)) + payload)
        else:
            transport.write(ws.encode(opcode, payload, mask=mask))
        self.last_activity = asyncio.get_running_loop().time()

    def send_nowait(self, opcode: int, payload: bytes) -> None:
        """Queue one message without waiting for backpressure (small control-ish messages, tunnels)."""
        self._write(opcode, payload)

    async def send(self, opcode: int, payload: bytes) -> None:
        """Send one message once the transport accepts more.

        Raises:
            ConnectionClosed: the connection is closed.
        """
        await self.drain()
        if self._close_sent or self.transport is None or self.transport.is_closing():
            raise ConnectionClosed("WebSocket connection closed")
        self._write(opcode, payload)

    async def ping(self, payload: bytes = b"") -> None:
        await self.send(ws.PING, payload)

    def close_nowait(self, code: int = ws.CLOSE_NORMAL, reason: str = "") -> None:
        """Send CLOSE (once) and close the socket after what is buffered."""
        if not self._close_sent:
            self._write(ws.CLOSE, ws.close_payload(code, reason))
            self._close_sent = True
        if self.transport is not None:
            linger_close(self.transport)  # the peer answers our CLOSE with its own, then closes
        self._wake()

    async def close(self, code: int = ws.CLOSE_NORMAL, reason: str = "") -> None:
        self.close_nowait(code, reason)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._closed), 5.0)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def closing(self) -> bool:
        return self._close_sent or self._closed.done()

    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def start_tunnel(self) -> TunnelTransport:
        """Carry a byte stream (SPDY) in binary messages from now on; queued messages are replayed."""
        self.tunnel = TunnelTransport(self)
        return self.tunnel

    def replay_into_tunnel(self) -> None:
        """Feed messages that arrived before the tunnel's protocol was attached."""
        assert self.tunnel is not None
        while self._queue:  # first what came before the tunnel began, then what it held since
            message = self._queue.popleft()
            self._queued -= len(message.payload)
            self.tunnel.feed(message.payload)
        self.tunnel.replay()


__all__ = ["WebSocketConnection"]
