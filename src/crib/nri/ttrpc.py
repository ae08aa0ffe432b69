"""ttrpc: unary calls over one byte stream, as containerd's NRI speaks it.

Wire format (containerd/ttrpc PROTOCOL.md): every message is a 10-byte header - data length (u32, big
endian), stream id (u32), type (u8: 1 request, 2 response, 3 data), flags (u8) - followed by at most 4 MiB
of data. A call is one stream: the client sends a Request frame on a new odd stream id (1, 3, 5, ...)
whose data is a ttrpc.Request (service, method, payload, timeout_nano), and the server answers with one
Response frame on the same id (a ttrpc.Response: status, payload). NRI uses unary calls only; data frames
and server-initiated (even) streams are refused here.

A peer that breaks the framing (oversized length, unknown type, undecodable envelope, a stream id used
twice) raises ProtocolError from the read loop: the owner closes that connection and only that one. A call
that outlives its timeout raises TimeoutError; a late answer to it is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from google.protobuf.message import DecodeError, Message

from crib._proto.ttrpc import ttrpc_pb2 as wire

HEADER = struct.Struct(">IIBB")
MAX_DATA = 4 << 20
REQUEST, RESPONSE, DATA = 1, 2, 3

# gRPC status codes used in ttrpc responses.
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNIMPLEMENTED, UNAVAILABLE = 8, 9, 12, 14


class ProtocolError(Exception):
    """The peer broke the ttrpc (or multiplexing) framing; its connection must be closed."""


class Closed(Exception):
    """The connection is gone (peer hung up, or we closed it)."""


class RemoteError(Exception):
    """The peer answered a call with a non-OK status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Stream(Protocol):
    """A reliable, ordered byte stream (one logical connection of the multiplexer)."""

    async def readexactly(self, n: int) -> bytes:
        """Exactly n bytes; raises Closed when the stream ends first."""

    async def send(self, data: bytes) -> None:
        """Write data; raises Closed when the stream is gone."""


def frame(stream_id: int, kind: int, data: bytes, flags: int = 0) -> bytes:
    """One complete message: header and data."""
    if len(data) > MAX_DATA:
        raise ValueError(f"ttrpc message of {len(data)} bytes exceeds the {MAX_DATA}-byte limit")
    return HEADER.pack(len(data), stream_id, kind, flags) + data


def parse_header(raw: bytes) -> tuple[int, int, int, int]:
    """(length, stream id, type, flags) of a header; ProtocolError for a length over the limit."""
    length, stream_id, kind, flags = HEADER.unpack(raw)
    if length > MAX_DATA:
        raise ProtocolError(f"ttrpc message of {length} bytes exceeds the {MAX_DATA}-byte limit")
    return length, stream_id, kind, flags


async def read_message(stream: Stream) -> tuple[int, int, bytes]:
    """The next (stream id, type, data) from stream."""
    length, stream_id, kind, _flags = parse_header(await stream.readexactly(HEADER.size))
    data = await stream.readexactly(length) if length else b""
    return stream_id, kind, data


def _decode(cls: type[Message], data: bytes, what: str) -> Any:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"undecodable {what}: {exc}") from exc
    return msg


class Client:
    """Calls over a stream; run() reads the answers (and must run for calls to complete)."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._next_id = 1
        self._waiting: dict[int, asyncio.Future[wire.Response]] = {}
        self._closed = False

    async def call(self, service: str, method: str, request: Message, response_type: type[Message],
                   timeout: float) -> Any:
        """One unary call; the server is told the deadline (timeout_nano) too.

        Raises:
            TimeoutError: no answer within timeout.
            RemoteError: the server answered with an error status.
            Closed: the connection is gone.
            ProtocolError: the answer's payload is not a response_type.
        """
        if self._closed:
            raise Closed("connection closed")
        sid, self._next_id = self._next_id, self._next_id + 2
        fut: asyncio.Future[wire.Response] = asyncio.get_running_loop().create_future()
        self._waiting[sid] = fut
        envelope = wire.Request(service=service, method=method, payload=request.SerializeToString(),
                                timeout_nano=int(timeout * 1e9))
        try:
            async with asyncio.timeout(timeout):
                await self._stream.send(frame(sid, REQUEST, envelope.SerializeToString()))
                answer = await fut
        finally:
            self._waiting.pop(sid, None)
        if answer.HasField("status") and answer.status.code != OK:
            raise RemoteError(answer.status.code, answer.status.message)
        return _decode(response_type, answer.payload, f"{service}/{method} response")

    async def run(self) -> None:
        """Read responses until the stream ends; ProtocolError on a broken peer."""
        try:
            while True:
                sid, kind, data = await read_message(self._stream)
                if kind != RESPONSE:
                    raise ProtocolError(f"ttrpc client got a message of type {kind} (responses only)")
                answer = _decode(wire.Response, data, "ttrpc response")
                fut = self._waiting.pop(sid, None)
                if fut is not None and not fut.done():
                    fut.set_result(answer)  # an unknown id is the late answer to a call that timed out
        finally:
            self._closed = True
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(Closed("connection closed"))
            self._waiting.clear()


Handler = Callable[[Any], Awaitable[Message]]


class Server:
    """Serves unary calls read from a stream; run() dispatches each to its own task.

    handlers maps (service, method) to (request type, coroutine function). A handler's RemoteError becomes
    that status; any other exception an UNKNOWN status with its message; an unknown method UNIMPLEMENTED.
    """

    def __init__(self, stream: Stream,
                 handlers: Mapping[tuple[str, str], tuple[type[Message], Handler]]) -> None:
        self._stream = stream
        self._handlers = handlers
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_id = 0

    async def run(self) -> None:
        """Read requests until the stream ends; ProtocolError on a broken peer."""
        try:
            while True:
                sid, kind, data = await read_message(self._stream)
                if kind != REQUEST:
                    raise ProtocolError(f"ttrpc server got a message of type {kind} (unary requests only)")
                if sid % 2 == 0 or sid <= self._last_id:
                    raise ProtocolError(f"ttrpc stream id {sid} is not a new odd id")
                self._last_id = sid
                request = _decode(wire.Request, data, "ttrpc request")
                task = asyncio.ensure_future(self._serve(sid, request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def _serve(self, sid: int, request: wire.Request) -> None:
        answer = wire.Response()
        entry = self._handlers.get((request.service, request.method))
        if entry is None:
            answer.status.code = UNIMPLEMENTED
            answer.status.message = f"{request.service}/{request.method} is not served here"
        else:
            cls, handler = entry
            try:
                msg = cls()
                msg.ParseFromString(request.payload)
                timeout = request.timeout_nano / 1e9 if request.timeout_nano > 0 else None
                async with asyncio.timeout(timeout):
                    answer.payload = (await handler(msg)).SerializeToString()
            except DecodeError as exc:
                answer.status.code, answer.status.message = INVALID_ARGUMENT, f"undecodable request: {exc}"
            except RemoteError as exc:
                answer.status.code, answer.status.message = exc.code, exc.message
            except TimeoutError:
                answer.status.code, answer.status.message = DEADLINE_EXCEEDED, "deadline exceeded"
            except Exception as exc:
                answer.status.code, answer.status.message = UNKNOWN, str(exc) or type(exc).__name__
        with contextlib.suppress(Closed):
            await self._stream.send(frame(sid, RESPONSE, answer.SerializeToString()))


__all__ = [
    "CANCELLED", "DEADLINE_EXCEEDED", "FAILED_PRECONDITION", "INVALID_ARGUMENT", "MAX_DATA", "OK",
    "RESOURCE_EXHAUSTED", "UNAVAILABLE",
    "UNIMPLEMENTED", "UNKNOWN", "Client", "Closed", "ProtocolError", "RemoteError", "Server", "Stream",
    "frame", "parse_header", "read_message",
]
