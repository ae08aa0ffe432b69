"""crib's gRPC server: HTTP/2 with prior knowledge on the CRI unix socket, run by the event loop itself.

Design note. grpcio's asyncio server hands every call between threads: the socket is read by grpc's
event-engine threads, the completion reaches a poller thread, an eventfd wakes the event loop, a Task
runs the handler, and the reply goes back the same way. For the calls kubelet polls (a status call
whose handler takes 15 us from cached bytes) those hand-offs were 0.4-0.5 ms of CPU and most of the
latency, 1.4-2x containerd's (bench/README.md, issue 13), and grpc's C core was a quarter of the idle
daemon's memory. Here the loop reads the socket (an asyncio.Protocol), decodes frames and headers,
starts the handler as a Task and writes the reply frames, with no thread in between.

What is spoken (RFC 9113, RFC 7541 through the `hpack` package, gRPC's PROTOCOL-HTTP2):
- the client preface; SETTINGS both ways (ours: a 16 MiB stream window and a matching connection
  window, no push), SETTINGS ACK, PING ACK, WINDOW_UPDATE, RST_STREAM, GOAWAY (sent at shutdown, with
  the last stream that will be answered), HEADERS with CONTINUATION, padding and priority; PRIORITY
  and unknown frame types are ignored as the RFC says;
- unary and server-streaming calls (CRI has no client streaming): the request is one message in the
  stream's DATA, the answer is HEADERS, DATA within the peer's windows and frame size, and trailers with
  grpc-status and grpc-message; a call that fails before answering gets a trailers-only response;
- grpc-timeout: the handler is cancelled at the deadline (and answers DEADLINE_EXCEEDED), as it is
  when the client resets the stream or goes away;
- a protocol violation costs the client its connection (GOAWAY with the reason), never the daemon.
Compressed requests are refused (UNIMPLEMENTED); clients only compress when asked to.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import struct
import time
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import hpack

from crib import log
from crib.cri import h2
from crib.cri.h2 import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    StatusCode,
    frame,
)

_log = log.get(__name__)

WINDOW = 16 * 1024 * 1024  # what we let a client send ahead, per stream and per connection
MAX_HEADER_BLOCK = 256 * 1024
MAX_STREAMS = 1000
# C-core clients refuse trailers over 8 KiB by default; a runc error's stderr can be longer than that.
MAX_MESSAGE_HEADER = 6000

_RESPONSE_HEADERS = b"\x88" + h2.literal_header(b"content-type", b"application/grpc")  # :status 200 indexed
_OK_TRAILERS = h2.literal_header(b"grpc-status", b"0")


class AbortError(Exception):
    """Raised by Context.abort: the call ends with this status instead of a reply."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class Context:
    """What a handler may ask of its call: grpc.aio's ServicerContext, as far as crib uses it."""

    __slots__ = ("_code", "deadline", "metadata")

    def __init__(self, metadata: list[tuple[str, str]], deadline: float | None) -> None:
        self.metadata = metadata
        self.deadline = deadline
        self._code: StatusCode | None = None

    async def abort(self, code: StatusCode, message: str) -> NoReturn:
        self._code = code
        raise AbortError(code, message)

    def code(self) -> StatusCode | None:
        return self._code

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: an async handler (an async generator for a server-streaming RPC) and its codecs."""

    handler: Callable[[Any, Context], Any]
    deserialize: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]
    streaming: bool = False
    # Run the handler's first step at once, from the frame that completed the request, instead of in a
    # new Task on the next turn of the loop. Only for unary handlers that answer from memory (the polled
    # status and list calls): a first step runs outside any Task, where asyncio.timeout() and
    # current_task() do not work; a handler that does wait is finished by a Task all the same.
    eager: bool = False


class _ConnectionError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Stream:
    __slots__ = ("body", "deadline", "dispatched", "drained", "ended", "expired", "headers_sent", "id",
                 "metadata", "method", "pending", "recv_unacked", "task", "timer", "trailers", "window")

    def __init__(self, sid: int, window: int) -> None:
        self.id = sid
        self.window = window  # what we may still send on it
        self.body = bytearray()
        self.recv_unacked = 0
        self.method: Method | None = None
        self.metadata: list[tuple[str, str]] = []
        self.deadline: float | None = None
        self.dispatched = False
        self.headers_sent = False
        self.pending = b""  # DATA payload waiting for window
        self.trailers: bytes | None = None  # the closing HEADERS block, sent after pending
        self.ended = False  # trailers written (or the stream reset): nothing more goes out
        self.expired = False
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.drained: asyncio.Event | None = None


class _Connection(asyncio.Protocol):
    """One client connection: frames in through data_received, calls run as Tasks, frames out."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.preface = False
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = MAX_HEADER_BLOCK
        self.streams: dict[int, _Stream] = {}
        self.blocked: dict[int, _Stream] = {}  # streams with pending DATA, waiting for window
        self.send_window = h2.DEFAULT_WINDOW
        self.peer_initial_window = h2.DEFAULT_WINDOW
        self.peer_max_frame = h2.DEFAULT_FRAME
        self.recv_unacked = 0
        self.last_stream = 0
        self.header_sid = 0  # a HEADERS without END_HEADERS: its CONTINUATIONs must follow
        self.header_flags = 0
        self.header_block = bytearray()
        self.going_away = False
        self.closed = False
        self.writable = asyncio.Event()
        self.writable.set()

    # ------------------------------------------------------------------------------- transport side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)
        settings = struct.pack(">HIHIHI", h2.SETTINGS_ENABLE_PUSH, 0, h2.SETTINGS_INITIAL_WINDOW_SIZE, WINDOW,
                               h2.SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS)
        transport.write(frame(SETTINGS, 0, 0, settings)
                        + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW - h2.DEFAULT_WINDOW)))
        if self.server.going_away:
            self.goaway(h2.NO_ERROR, "the runtime is shutting down")

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        try:
            self._parse()
        except _ConnectionError as exc:
            _log.warning("closing a CRI connection: %s", exc)
            self.goaway(exc.code, str(exc))
            self.close()
        except Exception:
            _log.exception("closing a CRI connection after an unexpected error")
            self.goaway(h2.INTERNAL_ERROR, "internal error")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for st in list(self.streams.values()):
            self._drop(st)
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def goaway(self, code: int, reason: str) -> None:
        """Tell the client which streams will still be answered; new ones are refused from now on."""
        if not self.going_away:
            self.going_away = True
            self.write(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code)
                             + reason.encode()[:256]))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        for st in list(self.streams.values()):
            self._drop(st)

    # ---------------------------------------------------------------------------------- frames in

    def _parse(self) -> None:
        buf = self.buf
        pos = 0
        if not self.preface:
            if len(buf) < len(h2.PREFACE):
                if not h2.PREFACE.startswith(bytes(buf)):
                    raise _ConnectionError(h2.PROTOCOL_ERROR, "not an HTTP/2 connection with prior knowledge")
                return
            if bytes(buf[:len(h2.PREFACE)]) != h2.PREFACE:
                raise _ConnectionError(h2.PROTOCOL_ERROR, "not an HTTP/2 connection with prior knowledge")
            self.preface = True
            pos = len(h2.PREFACE)
        end = len(buf)
        while end - pos >= 9 and not self.closed:
            length = buf[pos] << 16 | buf[pos + 1] << 8 | buf[pos + 2]
            if length > h2.DEFAULT_FRAME:
                raise _ConnectionError(h2.FRAME_SIZE_ERROR, f"a frame of {length} bytes (the limit is "
                                                            f"{h2.DEFAULT_FRAME})")
            if end - pos - 9 < length:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            self._frame(kind, flags, sid, payload)
        del buf[:pos]

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.header_sid and (kind != CONTINUATION or sid != self.header_sid):
            raise _ConnectionError(h2.PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, sid, payload)
        elif kind == HEADERS:
            if sid == 0 or sid % 2 == 0:
                raise _ConnectionError(h2.PROTOCOL_ERROR, f"HEADERS on stream {sid}")
            payload = _unpad(flags, payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self.header_flags = flags
            self.header_block = bytearray(payload)
            if flags & END_HEADERS:
                self._headers(sid)
            else:
                self.header_sid = sid
        elif kind == CONTINUATION:
            if sid == 0 or sid != self.header_sid:
                raise _ConnectionError(h2.PROTOCOL_ERROR, f"CONTINUATION on stream {sid} out of place")
            self.header_block += payload
            if len(self.header_block) > MAX_HEADER_BLOCK:
                raise _ConnectionError(h2.PROTOCOL_ERROR, "a header block over 256 KiB")
            if flags & END_HEADERS:
                self.header_sid = 0
                self._headers(sid)
        elif kind == SETTINGS:
            if sid != 0 or len(payload) % 6:
                raise _ConnectionError(h2.FRAME_SIZE_ERROR, "a malformed SETTINGS frame")
            if not flags & ACK:
                self._settings(payload)
        elif kind == PING:
            if sid != 0 or len(payload) != 8:
                raise _ConnectionError(h2.PROTOCOL_ERROR, "a malformed PING frame")
            if not flags & ACK:
                self.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == RST_STREAM:
            st = self.streams.get(sid)
            if st is not None:
                self._drop(st)
        elif kind == PUSH_PROMISE:
            raise _ConnectionError(h2.PROTOCOL_ERROR, "a client may not push")
        elif kind == GOAWAY:
            pass  # the client closes the connection when its calls are done; nothing to do before that
        # PRIORITY and unknown frame types are ignored (RFC 9113, 4.1 and 5.3.2).

    def _settings(self, payload: bytes) -> None:
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    raise _ConnectionError(h2.FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for st in self.streams.values():
                    st.window += delta
            elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                if not h2.DEFAULT_FRAME <= value <= 2**24 - 1:
                    raise _ConnectionError(h2.PROTOCOL_ERROR, f"a max frame size of {value}")
                self.peer_max_frame = value
        self.write(frame(SETTINGS, ACK, 0))
        self._unblock()

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(h2.FRAME_SIZE_ERROR, "a malformed WINDOW_UPDATE frame")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise _ConnectionError(h2.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > h2.MAX_WINDOW:
                raise _ConnectionError(h2.FLOW_CONTROL_ERROR, "the connection window went over 2^31-1")
        else:
            st = self.streams.get(sid)
            if st is None:
                return
            st.window += increment
        self._unblock()

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise _ConnectionError(h2.PROTOCOL_ERROR, "DATA on stream 0")
        # Everything received counts against the connection window, whatever became of its stream.
        self.recv_unacked += len(payload)
        if self.recv_unacked >= WINDOW // 2:
            self.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.recv_unacked)))
            self.recv_unacked = 0
        st = self.streams.get(sid)
        if st is None or st.dispatched:
            return  # a stream already answered or reset: its late data is dropped
        st.body += _unpad(flags, payload)
        st.recv_unacked += len(payload)
        limit = self.server.max_message + 5
        if len(st.body) > limit:
            self._refuse(st, StatusCode.RESOURCE_EXHAUSTED,
                         f"the request is over {self.server.max_message} bytes, the most crib accepts")
            self.write(frame(RST_STREAM, 0, sid, struct.pack(">I", h2.NO_ERROR)))
            return
        if flags & END_STREAM:
            self._dispatch(st)
        elif st.recv_unacked >= WINDOW // 2:
            self.write(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", st.recv_unacked)))
            st.recv_unacked = 0

    def _headers(self, sid: int) -> None:
        try:  # every block is decoded, whatever its stream: the decoder's table must follow the client's
            fields: Any = self.decoder.decode(bytes(self.header_block), raw=False)
        except hpack.HPACKError as exc:
            raise _ConnectionError(h2.COMPRESSION_ERROR, f"unreadable headers: {exc}") from None
        self.header_block = bytearray()
        end = bool(self.header_flags & END_STREAM)
        st = self.streams.get(sid)
        if st is not None:  # trailers of a request: the end of its stream
            if end and not st.dispatched:
                self._dispatch(st)
            return
        if sid <= self.last_stream:
            return  # a stream that is over; nothing to answer
        self.last_stream = sid
        st = _Stream(sid, self.peer_initial_window)
        self.streams[sid] = st
        if self.going_away or len(self.streams) > MAX_STREAMS:
            del self.streams[sid]
            self.write(frame(RST_STREAM, 0, sid, struct.pack(">I", h2.REFUSED_STREAM)))
            return
        self._start(st, fields)
        if end and not st.dispatched:
            self._dispatch(st)

    def _start(self, st: _Stream, fields: Iterable[tuple[str, str]]) -> None:
        path = method = content_type = timeout = encoding = ""
        metadata: list[tuple[str, str]] = []
        for name, value in fields:
            if name == ":path":
                path = value
            elif name == ":method":
                method = value
            elif name == "content-type":
                content_type = value
            elif name == "grpc-timeout":
                timeout = value
            elif name == "grpc-encoding":
                encoding = value
            elif name[0] != ":":
                metadata.append((name, value))
        st.metadata = metadata
        if method != "POST" or not content_type.startswith("application/grpc"):
            # Not a gRPC call at all: an HTTP answer (gRPC: 415 for a wrong content type).
            st.dispatched = True
            self._end(st, h2.literal_header(b":status", b"415"), trailers_only=True, http_only=True)
            return
        st.method = self.server.methods.get(path)
        if st.method is None:
            self._refuse(st, StatusCode.UNIMPLEMENTED,
                         f"unknown method {path}: crib serves runtime.v1.RuntimeService, "
                         "runtime.v1.ImageService and crib.images.v1.Images")
            return
        if encoding and encoding != "identity":
            st.metadata.append(("grpc-encoding", encoding))
        if timeout:
            seconds = h2.parse_grpc_timeout(timeout)
            if seconds is None:
                self._refuse(st, StatusCode.INVALID_ARGUMENT, f"grpc-timeout {timeout!r} is not a timeout")
                return
            st.deadline = time.monotonic() + seconds

    # ---------------------------------------------------------------------------------- calls

    def _dispatch(self, st: _Stream) -> None:
        """The request is complete: decode its one message and start the handler."""
        st.dispatched = True
        method = st.method
        if method is None:
            return
        body = st.body
        st.body = bytearray()
        if len(body) < 5 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            self._refuse(st, StatusCode.INTERNAL, "the request is not one gRPC message (length prefix and "
                                                  "bytes disagree, or the message is missing)")
            return
        if body[0] != 0:
            self._refuse(st, StatusCode.UNIMPLEMENTED,
                         "the request is compressed; crib accepts uncompressed (identity) messages only")
            return
        try:
            request = method.deserialize(bytes(body[5:]))
        except Exception as exc:  # crib's deserializers never raise (interceptors._tolerant); others may
            self._refuse(st, StatusCode.INVALID_ARGUMENT, f"the request does not decode: {exc}")
            return
        ctx = Context(st.metadata, st.deadline)
        loop = asyncio.get_running_loop()
        if method.eager and not method.streaming:
            call = self._unary_call(st, method, request, ctx)
            context = contextvars.copy_context()
            try:
                waiting = context.run(call.send, None)
            except StopIteration:
                return  # answered: no Task, no turn of the loop in between
            task = loop.create_task(_finish(call, waiting), context=context)
        else:
            run = self._stream_call if method.streaming else self._unary_call
            task = loop.create_task(run(st, method, request, ctx))
        st.task = task
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)
        if st.deadline is not None:
            st.timer = loop.call_later(max(0.0, st.deadline - time.monotonic()), self._expire, st)

    def _expire(self, st: _Stream) -> None:
        st.timer = None
        if st.task is not None and not st.task.done():
            st.expired = True
            st.task.cancel()

    async def _unary_call(self, st: _Stream, method: Method, request: Any, ctx: Context) -> None:
        try:
            reply = await method.handler(request, ctx)
            data = method.serialize(reply)
        except BaseException as exc:  # every ending becomes the call's status
            self._fail(st, exc)
            return
        if st.ended:
            return
        out = h2.message(data)
        n = len(out)
        if n <= self.send_window and n <= st.window and n <= self.peer_max_frame:
            # The common case in one write: headers, the reply, the trailers.
            self.send_window -= n
            st.window -= n
            self._close_stream(st)
            self.write(frame(HEADERS, END_HEADERS, st.id, _RESPONSE_HEADERS) + frame(DATA, 0, st.id, out)
                       + frame(HEADERS, END_HEADERS | END_STREAM, st.id, _OK_TRAILERS))
            return
        self._send_headers(st)
        st.pending = out
        self._end(st, _OK_TRAILERS)

    async def _stream_call(self, st: _Stream, method: Method, request: Any, ctx: Context) -> None:
        try:
            async with contextlib.aclosing(method.handler(request, ctx)) as items:
                async for item in items:
                    data = h2.message(method.serialize(item))
                    if st.ended:
                        return
                    self._send_headers(st)
                    st.pending += data
                    self._flush(st)
                    while st.pending and not st.ended:  # the client has not made room yet
                        st.drained = asyncio.Event()
                        await st.drained.wait()
                    if not self.writable.is_set():
                        await self.writable.wait()
        except BaseException as exc:  # every ending becomes the call's status
            self._fail(st, exc)
            return
        self._end(st, _OK_TRAILERS)

    def _fail(self, st: _Stream, exc: BaseException) -> None:
        """End a call whose handler did not return: the status it aborted with, or what happened."""
        if isinstance(exc, AbortError):
            self._refuse(st, exc.code, exc.message)
        elif isinstance(exc, asyncio.CancelledError):
            if st.expired:
                self._refuse(st, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
            else:
                self._refuse(st, StatusCode.CANCELLED, "the call was cancelled")
        elif isinstance(exc, Exception):
            # The handlers crib registers map their own errors (cri/interceptors.py); this is the net.
            _log.error("unexpected error answering a call", exc_info=exc)
            self._refuse(st, StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
        else:
            self._refuse(st, StatusCode.UNAVAILABLE, "the runtime is shutting down")
            raise exc

    # -------------------------------------------------------------------------------- frames out

    def _send_headers(self, st: _Stream) -> None:
        if not st.headers_sent and not st.ended:
            st.headers_sent = True
            self.write(frame(HEADERS, END_HEADERS, st.id, _RESPONSE_HEADERS))

    def _refuse(self, st: _Stream, code: StatusCode, message: str) -> None:
        """End the call with a status and no (more) reply."""
        st.dispatched = True
        trailers = h2.literal_header(b"grpc-status", str(int(code)).encode())
        if message:
            encoded = h2.encode_grpc_message(message)
            if len(encoded) > MAX_MESSAGE_HEADER:
                cut = encoded[:MAX_MESSAGE_HEADER]
                escape = cut.find(b"%", len(cut) - 2)  # never half an escape
                encoded = (cut if escape == -1 else cut[:escape]) + b"... (cut)"
            trailers += h2.literal_header(b"grpc-message", encoded)
        st.pending = b""
        self._end(st, trailers, trailers_only=not st.headers_sent)

    def _end(self, st: _Stream, trailers: bytes, *, trailers_only: bool = False,
             http_only: bool = False) -> None:
        """Queue the closing block after whatever DATA is pending, and send what the windows allow."""
        if st.ended:
            return
        if trailers_only:
            st.headers_sent = True
            block = trailers if http_only else _RESPONSE_HEADERS + trailers
            self._close_stream(st)
            self.write(frame(HEADERS, END_HEADERS | END_STREAM, st.id, block))
            return
        st.trailers = trailers
        self._flush(st)

    def _flush(self, st: _Stream) -> None:
        while st.pending and self.send_window > 0 and st.window > 0 and not st.ended:
            n = min(len(st.pending), self.send_window, st.window, self.peer_max_frame)
            chunk, st.pending = st.pending[:n], st.pending[n:]
            self.send_window -= n
            st.window -= n
            self.write(frame(DATA, 0, st.id, chunk))
        if st.pending and not st.ended:
            self.blocked[st.id] = st
            return
        self.blocked.pop(st.id, None)
        if st.trailers is not None and not st.ended:
            trailers = st.trailers
            self._close_stream(st)
            self.write(frame(HEADERS, END_HEADERS | END_STREAM, st.id, trailers))
        if st.drained is not None:
            st.drained.set()

    def _unblock(self) -> None:
        for st in list(self.blocked.values()):
            if self.send_window <= 0:
                break
            self._flush(st)

    def _close_stream(self, st: _Stream) -> None:
        """Nothing more goes out on st; it is forgotten (a client's late frames for it are ignored)."""
        st.ended = True
        st.pending = b""
        self.streams.pop(st.id, None)
        self.blocked.pop(st.id, None)
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        if st.drained is not None:
            st.drained.set()

    def _drop(self, st: _Stream) -> None:
        """The client reset the stream or went away: stop its handler, send nothing more."""
        self._close_stream(st)
        if st.task is not None and not st.task.done():
            st.task.cancel()


class _Resume:
    """Awaitable that carries on a coroutine whose first step already ran and is waiting on `waiting`:
    every value and exception the Task sends goes to the coroutine, and what it yields goes to the Task."""

    __slots__ = ("call", "waiting")

    def __init__(self, call: Coroutine[Any, Any, None], waiting: Any) -> None:
        self.call = call
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        call, waiting = self.call, self.waiting
        while True:
            try:
                sent = yield waiting
            except BaseException as exc:  # cancellation included: the coroutine decides what it means
                try:
                    waiting = call.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = call.send(sent)
                except StopIteration:
                    return


async def _finish(call: Coroutine[Any, Any, None], waiting: Any) -> None:
    await _Resume(call, waiting)


def _unpad(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(h2.PROTOCOL_ERROR, "padding longer than its frame")
    return payload[1:len(payload) - payload[0]]


class Server:
    """The CRI services on a unix socket: register methods, start, stop with a grace period."""

    def __init__(self, *, max_message: int) -> None:
        self.max_message = max_message
        self.methods: dict[str, Method] = {}
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.going_away = False
        self._server: asyncio.AbstractServer | None = None

    def add_service(self, service: str, methods: Mapping[str, Method]) -> None:
        """Serve methods under /<service>/<name>."""
        for name, method in methods.items():
            self.methods[f"/{service}/{name}"] = method

    async def start(self, path: str) -> None:
        """Listen on the unix socket at path (a stale socket file there is replaced).

        Raises:
            OSError: the socket cannot be created.
        """
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Connection(self), path=path, backlog=1024)

    async def stop(self, grace: float | None) -> None:
        """Stop accepting, tell every client (GOAWAY), let calls in flight finish within grace seconds,
        then cancel what is left and close the connections."""
        self.going_away = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.goaway(h2.NO_ERROR, "the runtime is shutting down")
        if self.tasks and grace:
            await asyncio.wait(list(self.tasks), timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5.0)
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()


__all__ = ["AbortError", "Context", "Method", "Server", "StatusCode"]
