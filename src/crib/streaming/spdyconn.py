"""A SPDY/3.1 connection on asyncio: streams, replies, pings, GOAWAY and flow control, for both ends.

Streams: a client opens odd-numbered streams (SYN_STREAM) and may write on one only after its SYN_REPLY
(spdystream drops data that arrives before it replied); a server replies to each stream it accepts. A
stream is half-closed by an empty DATA frame with FIN, reset with RST_STREAM.

Flow control, both ways (what constrains it: kubelet, kubectl and crictl use spdystream, which neither
sends WINDOW_UPDATE nor honours it):

* Receiving: each stream buffers what the peer sent until its reader takes it, and its window is credited
  back (WINDOW_UPDATE) only as the reader consumes, so a peer that honours windows never has more than
  `recv_window` bytes in flight per stream. A peer that ignores them is stopped by TCP instead: once a
  stream holds more than `recv_window` bytes unread, the connection stops reading the socket until the
  reader catches up. The session-level window is credited on receipt (per-stream windows bound memory).
  Credits go only to a peer that takes part in flow control: spdystream would leave them unread, and a
  socket closed with unread input resets the connection, losing the tail of what it sent.
* Sending: the peer's windows are tracked from the start and enforced once the peer shows it takes part in
  flow control (a SETTINGS frame with INITIAL_WINDOW_SIZE or any WINDOW_UPDATE); before that, and for
  spdystream, only TCP backpressure applies (drain(), see _transport.py). crib's own client sends its
  SETTINGS first, so with it the windows hold from the first byte.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from crib.streaming import spdy
from crib.streaming._transport import HIGH_WATER, LOW_WATER, Backpressure, ConnectionClosed, linger_close

DEFAULT_RECV_WINDOW = 512 * 1024
SESSION_WINDOW = 64 * 1024 * 1024
MAX_CHUNK = 128 * 1024  # largest DATA frame written
MAX_EARLY_STREAMS = 64  # streams held for a handler not yet set


class StreamReset(ConnectionClosed):
    """The stream was reset (RST_STREAM) or its connection is gone."""


class SpdyStream:
    """One SPDY stream: read() what the peer sends, write() and close() our half, reset() both."""

    def __init__(self, conn: SpdyConnection, stream_id: int, headers: spdy.Headers, *, local: bool) -> None:
        self.id = stream_id
        self.headers = headers
        self.local = local
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._unacked = 0
        self._eof = False
        self._local_closed = False
        self._error: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None
        self._send_window = conn._peer_initial_window
        self.replied = asyncio.Event()
        if not local:
            self.replied.set()  # a remote stream is ours to reply to; writing may start at once
        self.reply_headers: spdy.Headers = {}

    def __repr__(self) -> str:
        return f"<SpdyStream {self.id} {self.headers.get('streamtype', '')}>"

    @property
    def stream_type(self) -> str:
        """The Kubernetes `streamType` header (error, stdin, stdout, stderr, resize, data)."""
        return self.headers.get("streamtype", "")

    @property
    def remote_closed(self) -> bool:
        return self._eof or self._error is not None

    @property
    def local_closed(self) -> bool:
        return self._local_closed or self._error is not None

    # ----------------------------------------------------------------------------------------- reading

    async def read(self) -> bytes:
        """The next chunk the peer sent; b"" once it half-closed.

        Raises:
            StreamReset: the stream or connection was reset.
        """
        while not self._chunks:
            if self._error is not None:
                raise StreamReset(f"stream {self.id} was reset") from self._error
            if self._eof:
                return b""
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        chunk = self._chunks.popleft()
        self._consumed(len(chunk))
        return chunk

    async def read_all(self, limit: int = 1 << 20) -> bytes:
        """Everything until the peer half-closes (at most limit bytes are kept)."""
        parts, size = [], 0
        while chunk := await self.read():
            if size < limit:
                parts.append(chunk[: limit - size])
            size += len(chunk)
        return b"".join(parts)

    def _consumed(self, n: int) -> None:
        self._buffered -= n
        self._conn._buffer_drained(self)
        if self._eof or self._error is not None or not self._conn.flow_control:
            return  # (a peer that ignores windows is not sent credits it would leave unread)
        self._unacked += n
        if self._unacked >= self._conn.recv_window // 2:
            self._conn._send(self._conn._encoder.window_update(self.id, self._unacked))
            self._unacked = 0

    def _feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            self._conn._buffer_grew(self)
        self._wake()

    def _finish(self) -> None:
        self._eof = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    # ----------------------------------------------------------------------------------------- writing

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send data, honouring the peer's windows (when it uses them) and the transport's backpressure.

        Raises:
            StreamReset: the stream was reset or the connection is gone.
        """
        if not self.replied.is_set():
            await self.wait_reply()
        conn = self._conn
        view = memoryview(data)
        while view:
            if self._error is not None:
                raise StreamReset(f"stream {self.id} was reset") from self._error
            if self._local_closed:
                raise StreamReset(f"stream {self.id} is closed for writing")
            await conn.drain()
            n = min(len(view), MAX_CHUNK)
            if conn.flow_control:
                while self._error is None and (self._send_window <= 0 or conn._send_window <= 0):
                    await conn._window_changed()
                if self._error is not None:
                    continue
                n = min(n, self._send_window, conn._send_window)
            chunk = view[:n]
            conn._send(spdy.data_header(self.id, n) + chunk)
            self._send_window -= n
            conn._send_window -= n
            view = view[n:]

    def close(self) -> None:
        """Half-close: tell the peer we send nothing more (idempotent)."""
        if self._local_closed or self._error is not None:
            return
        self._local_closed = True
        self._conn._send(spdy.data_header(self.id, 0, fin=True))
        self._conn._maybe_forget(self)

    def reset(self, status: int = spdy.CANCEL) -> None:
        """Abort the stream both ways (idempotent)."""
        if self._error is None:
            self._conn._send(spdy.Encoder.rst_stream(self.id, status))
            self._fail(StreamReset(f"stream {self.id} reset locally"))
        self._conn._forget(self)

    async def wait_reply(self) -> None:
        """For a stream we opened: wait until the peer replied (or reset it)."""
        if self.replied.is_set():
            return
        waiter = asyncio.ensure_future(self.replied.wait())
        closed = asyncio.ensure_future(self._conn.wait_closed())
        try:
            while not self.replied.is_set():
                if self._error is not None:
                    raise StreamReset(f"stream {self.id} was refused") from self._error
                await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed.done() and not self.replied.is_set():
                    raise StreamReset(f"the connection closed before stream {self.id} was answered")
        finally:
            waiter.cancel()
            closed.cancel()


class SpdyConnection(Backpressure, asyncio.Protocol):
    """One end of a SPDY connection (see the module note).

    Args:
        server: which end this is (stream and ping id parity).
        on_stream: called with each stream the peer opens; it must call accept() or reject().
        recv_window: the per-stream window this end grants (and its per-stream buffer bound).
    """

    def __init__(self, *, server: bool, on_stream: Callable[[SpdyStream], None] | None = None,
                 recv_window: int = DEFAULT_RECV_WINDOW) -> None:
        Backpressure.__init__(self)
        self.server = server
        self.recv_window = recv_window
        self._on_stream = on_stream
        self._early: list[SpdyStream] = []  # streams that came before a handler was set
        self.transport: asyncio.BaseTransport | None = None
        self._encoder = spdy.Encoder()
        self._decoder = spdy.Decoder()
        self.streams: dict[int, SpdyStream] = {}
        self._ids = itertools.count(2 if server else 1, 2)
        self._ping_ids = itertools.count(2 if server else 1, 2)
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._last_peer_stream = 0
        self._peer_initial_window = spdy.DEFAULT_WINDOW
        self._send_window = spdy.DEFAULT_WINDOW
        self.flow_control = False
        self._window_waiters: list[asyncio.Future[None]] = []
        self._overfull: set[int] = set()
        self._session_unacked = 0
        self._reading_paused = False
        loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[None] = loop.create_future()
        self.goaway_received = False
        self.goaway_sent = False
        self.last_activity = loop.time()

    @property
    def on_stream(self) -> Callable[[SpdyStream], None] | None:
        return self._on_stream

    @on_stream.setter
    def on_stream(self, handler: Callable[[SpdyStream], None] | None) -> None:
        """Set the handler of new streams; those that arrived before it are handed over now."""
        self._on_stream = handler
        early, self._early = self._early, []
        for stream in early:
            if handler is not None and not stream._error:
                handler(stream)

    # ---------------------------------------------------------------------------------- asyncio plumbing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if isinstance(transport, asyncio.WriteTransport):
            transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        # Our windows; spdystream ignores both frames, a SPDY/3.1 peer sizes its sending by them.
        self._send(self._encoder.settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: self.recv_window}))
        self._send(self._encoder.window_update(0, SESSION_WINDOW - spdy.DEFAULT_WINDOW))

    def data_received(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        try:
            frames = self._decoder.feed(data)
        except spdy.ProtocolError as exc:
            self._protocol_error(str(exc))
            return
        for frame in frames:
            if self._closed.done():
                return
            self._dispatch(frame)

    def eof_received(self) -> bool | None:
        return False  # the peer finished sending: close our side too (ends a linger at once)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._closed.done():
            return
        lost = exc or ConnectionClosed("connection closed")
        for stream in list(self.streams.values()):
            stream._fail(lost)
        self.streams.clear()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(ConnectionClosed("connection closed before the ping was answered"))
        self._wake_windows()
        self._wake_drainers(lost)
        if not self._closed.done():
            self._closed.set_result(None)

    # ------------------------------------------------------------------------------------------ frames

    def _dispatch(self, frame: spdy.Frame) -> None:
        if isinstance(frame, spdy.DataFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is None or stream._eof:
                return  # late data of a stream we reset or forgot: dropped, as spdystream does
            stream._feed(frame.data)
            if frame.fin:
                stream._finish()
                self._maybe_forget(stream)
            self._credit_session(len(frame.data))
        elif isinstance(frame, spdy.SynStream):
            self._syn_stream(frame)
        elif isinstance(frame, spdy.SynReply):
            stream = self.streams.get(frame.stream_id)
            if stream is not None and stream.local:
                stream.reply_headers = frame.headers
                stream.replied.set()
                if frame.fin:
                    stream._finish()
                    self._maybe_forget(stream)
        elif isinstance(frame, spdy.HeadersFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None and frame.fin:
                stream._finish()
                self._maybe_forget(stream)
        elif isinstance(frame, spdy.RstStream):
            stream = self.streams.pop(frame.stream_id, None)
            if stream is not None:
                stream._fail(StreamReset(f"stream {frame.stream_id} reset by the peer "
                                         f"(status {frame.status})"))
                self._overfull.discard(stream.id)
                self._maybe_resume_reading()
                self._wake_windows()
        elif isinstance(frame, spdy.WindowUpdate):
            self._window_update(frame)
        elif isinstance(frame, spdy.Settings):
            self._settings(frame)
        elif isinstance(frame, spdy.Ping):
            self._ping(frame)
        elif isinstance(frame, spdy.GoAway):
            self.goaway_received = True

    def _syn_stream(self, frame: spdy.SynStream) -> None:
        mine = 0 if self.server else 1  # a server's own streams are even, a client's odd
        if frame.stream_id % 2 == mine or frame.stream_id <= self._last_peer_stream:
            self._send(self._encoder.rst_stream(frame.stream_id, spdy.PROTOCOL_ERROR))
            return
        self._last_peer_stream = frame.stream_id
        if self.goaway_sent or len(self._early) >= MAX_EARLY_STREAMS or \
                (self._on_stream is None and not self.server):
            self._send(self._encoder.rst_stream(frame.stream_id, spdy.REFUSED_STREAM))
            return
        stream = SpdyStream(self, frame.stream_id, frame.headers, local=False)
        self.streams[stream.id] = stream
        if frame.fin:
            stream._finish()
        if self._on_stream is None:
            self._early.append(stream)
        else:
            self._on_stream(stream)

    def _window_update(self, frame: spdy.WindowUpdate) -> None:
        self.flow_control = True
        if frame.stream_id == 0:
            self._send_window += frame.delta
        else:
            stream = self.streams.get(frame.stream_id)
            if stream is None:
                return
            stream._send_window += frame.delta
        self._wake_windows()

    def _settings(self, frame: spdy.Settings) -> None:
        window = frame.values.get(spdy.SETTINGS_INITIAL_WINDOW_SIZE)
        if window is None:
            return
        self.flow_control = True
        delta = window - self._peer_initial_window
        self._peer_initial_window = window
        for stream in self.streams.values():
            stream._send_window += delta
        self._wake_windows()

    def _ping(self, frame: spdy.Ping) -> None:
        ours = frame.id % 2 == (0 if self.server else 1)
        if not ours:
            self._send(self._encoder.ping(frame.id))
            return
        waiter = self._pings.pop(frame.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _protocol_error(self, message: str) -> None:
        self._send(self._encoder.goaway(self._last_peer_stream, spdy.GOAWAY_PROTOCOL_ERROR))
        self.goaway_sent = True
        self.abort(ConnectionClosed(f"SPDY protocol error: {message}"))

    # ------------------------------------------------------------------------------------- flow control

    def _credit_session(self, n: int) -> None:
        if not self.flow_control:
            return
        self._session_unacked += n
        if self._session_unacked >= SESSION_WINDOW // 4:
            self._send(self._encoder.window_update(0, self._session_unacked))
            self._session_unacked = 0

    def _buffer_grew(self, stream: SpdyStream) -> None:
        if stream._buffered > self.recv_window and stream.id not in self._overfull:
            self._overfull.add(stream.id)
            if not self._reading_paused and isinstance(self.transport, asyncio.ReadTransport):
                self._reading_paused = True
                self.transport.pause_reading()

    def _buffer_drained(self, stream: SpdyStream) -> None:
        if stream.id in self._overfull and stream._buffered <= self.recv_window // 2:
            self._overfull.discard(stream.id)
            self._maybe_resume_reading()

    def _maybe_resume_reading(self) -> None:
        if self._reading_paused and not self._overfull and isinstance(self.transport, asyncio.ReadTransport):
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    async def _window_changed(self) -> None:
        if self._closed.done():
            raise ConnectionClosed("connection closed")
        waiter = asyncio.get_running_loop().create_future()
        self._window_waiters.append(waiter)
        await waiter

    def _wake_windows(self) -> None:
        waiters, self._window_waiters = self._window_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------------------------------ actions

    def _send(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)  # type: ignore[attr-defined]
            self.last_activity = asyncio.get_running_loop().time()

    def _forget(self, stream: SpdyStream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
        self._overfull.discard(stream.id)
        self._maybe_resume_reading()

    def _maybe_forget(self, stream: SpdyStream) -> None:
        if stream._local_closed and stream._eof:
            self._forget(stream)

    def accept(self, stream: SpdyStream, headers: spdy.Headers | None = None) -> None:
        """Reply to a stream the peer opened."""
        self._send(self._encoder.syn_reply(stream.id, headers or {}))

    def reject(self, stream: SpdyStream, status: int = spdy.REFUSED_STREAM) -> None:
        stream.reset(status)

    def open_stream(self, headers: spdy.Headers, *, fin: bool = False) -> SpdyStream:
        """Open a stream (SYN_STREAM); write() on it waits for the peer's reply.

        Raises:
            ConnectionClosed: the connection is closed or going away.
        """
        if self._closed.done() or self.goaway_received or self.goaway_sent:
            raise ConnectionClosed("the SPDY connection is closed or going away")
        stream = SpdyStream(self, next(self._ids), headers, local=True)
        self.streams[stream.id] = stream
        if fin:
            stream._local_closed = True
        self._send(self._encoder.syn_stream(stream.id, headers, fin=fin))
        return stream

    async def ping(self, timeout: float = 10.0) -> float:
        """Round-trip time of a PING, in seconds."""
        loop = asyncio.get_running_loop()
        ping_id = next(self._ping_ids)
        waiter: asyncio.Future[None] = loop.create_future()
        self._pings[ping_id] = waiter
        started = loop.time()
        self._send(self._encoder.ping(ping_id))
        try:
            async with asyncio.timeout(timeout):
                await waiter
        finally:
            self._pings.pop(ping_id, None)
        return loop.time() - started

    def goaway(self, status: int = spdy.GOAWAY_OK) -> None:
        """Tell the peer no new streams will be accepted (idempotent)."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self._send(self._encoder.goaway(self._last_peer_stream, status))

    def close(self) -> None:
        """GOAWAY, then close once what is buffered has been written and the peer closed too (linger)."""
        self.goaway()
        if self.transport is not None:
            linger_close(self.transport)

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the connection now; every stream fails."""
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.abort()  # type: ignore[attr-defined]
        self.connection_lost(exc)

    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def info(self) -> dict[str, Any]:
        """Counters for logs and tests."""
        return {"streams": len(self.streams), "flow_control": self.flow_control,
                "reading_paused": self._reading_paused}


__all__ = ["DEFAULT_RECV_WINDOW", "SpdyConnection", "SpdyStream", "StreamReset"]
