"""crib's gRPC server against grpc's own client (C core) and against raw, hostile bytes.

No root needed: the server listens on a unix socket in a temporary directory, the handlers are small
functions of the test. What kubelet and crictl (Go) make of it is covered by critest and the integration
suite, which talk to the real daemon.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crib.cri import h2
from crib.cri.h2server import Context, Method, Server, StatusCode
from tests.fixtures.cri import wait_for

SERVICE = "test.v1.Echo"
_VAR: contextvars.ContextVar[bytes] = contextvars.ContextVar("_VAR", default=b"unset")


def _ident(data: bytes) -> bytes:
    return data


class Handlers:
    """The test service: what each call saw, and events to hold calls in flight."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.release = asyncio.Event()
        self.started = threading.Event()
        self.seen_metadata: list[tuple[str, str]] = []

    async def echo(self, request: bytes, context: Context) -> bytes:
        self.seen_metadata = context.invocation_metadata()
        return request

    async def big(self, request: bytes, context: Context) -> bytes:
        return bytes(range(256)) * (int(request or b"0") // 256)

    async def fail(self, request: bytes, context: Context) -> bytes:
        await context.abort(StatusCode.NOT_FOUND, request.decode())
        raise AssertionError("abort returned")

    async def boom(self, request: bytes, context: Context) -> bytes:
        raise KeyError("surprise")

    async def hang(self, request: bytes, context: Context) -> bytes:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append("hang")
            raise
        return b"released"

    async def where(self, request: bytes, context: Context) -> bytes:
        """Which Task ran the first step (none, when started eagerly), then which finished the call."""
        first = asyncio.current_task()
        _VAR.set(request)
        if request:
            await asyncio.sleep(0.01)
        last = asyncio.current_task()
        return b"%s %s %s" % (b"task" if first else b"none", b"task" if last else b"none", _VAR.get())

    async def count(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield b"%08d" % i + b"." * 4000

    async def forever(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"first"
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append("forever")
            raise
        yield b"never"


class Running:
    """A Server on its own event loop thread, as the daemon runs it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handlers: Handlers = self.call(self._make)
        self.server = Server(max_message=8 * 1024 * 1024)
        h = self.handlers
        methods = {name: Method(handler=fn, deserialize=_ident, serialize=_ident)
                   for name, fn in (("Echo", h.echo), ("Big", h.big), ("Fail", h.fail), ("Boom", h.boom),
                                    ("Hang", h.hang))}
        methods |= {name: Method(handler=fn, deserialize=_ident, serialize=_ident, eager=True)
                    for name, fn in (("EagerWhere", h.where), ("EagerHang", h.hang), ("EagerFail", h.fail))}
        methods["Where"] = Method(handler=h.where, deserialize=_ident, serialize=_ident)
        methods |= {name: Method(handler=fn, deserialize=_ident, serialize=_ident, streaming=True)
                    for name, fn in (("Count", h.count), ("Forever", h.forever))}
        self.server.add_service(SERVICE, methods)
        self.call(lambda: self.server.start(str(path)))

    @staticmethod
    async def _make() -> Handlers:
        return Handlers()

    def call(self, fn: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(timeout)

    def close(self) -> None:
        self.call(lambda: self.server.stop(grace=0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path / "s.sock")
    yield r
    r.close()


@pytest.fixture
def channel(running: Running) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix:{running.path}",
                               options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        yield ch


def unary(channel: grpc.Channel, name: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=_ident, response_deserializer=_ident)


def stream(channel: grpc.Channel, name: str) -> Any:
    return channel.unary_stream(f"/{SERVICE}/{name}", request_serializer=_ident, response_deserializer=_ident)


def test_unary_round_trip_carries_metadata(running: Running, channel: grpc.Channel) -> None:
    assert unary(channel, "Echo")(b"hello", timeout=5, metadata=[("x-who", "test")]) == b"hello"
    assert ("x-who", "test") in running.handlers.seen_metadata
    assert unary(channel, "Echo")(b"", timeout=5) == b""


@pytest.mark.parametrize("size", [70_000, 20 * 1024 * 1024], ids=["over-a-window", "20MiB"])
def test_large_replies_and_requests_cross_the_windows(channel: grpc.Channel, size: int) -> None:
    reply = unary(channel, "Big")(str(size).encode(), timeout=30)
    assert len(reply) == size // 256 * 256
    assert reply[:256] == bytes(range(256))
    request = b"r" * 5_000_000
    assert unary(channel, "Echo")(request, timeout=30) == request


def test_a_request_over_the_limit_is_resource_exhausted(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        unary(channel, "Echo")(b"x" * (9 * 1024 * 1024), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over 8388608 bytes" in info.value.details()
    assert unary(channel, "Echo")(b"after", timeout=5) == b"after"


@pytest.mark.parametrize(("message", "expect"), [
    ("container 'x' not found", "container 'x' not found"),
    ("ünïcode, 100% and a\nnewline", "ünïcode, 100% and a\nnewline"),
], ids=["ascii", "escaped"])
def test_abort_sends_the_status_and_message(channel: grpc.Channel, message: str, expect: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        unary(channel, "Fail")(message.encode(), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == expect


def test_a_long_message_is_cut_not_refused_by_the_client(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        unary(channel, "Fail")(("é" * 5000).encode(), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details().startswith("é" * 900)
    assert info.value.details().endswith("... (cut)")


def test_unexpected_errors_and_unknown_methods(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        unary(channel, "Boom")(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert "KeyError" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        unary(channel, "Nope")(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert f"/{SERVICE}/Nope" in info.value.details()


# "EagerHang" ran its first step outside any Task and waits in the Task that carried it on.
@pytest.mark.parametrize("method", ["Hang", "EagerHang"])
def test_the_deadline_cancels_the_handler(running: Running, channel: grpc.Channel, method: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        unary(channel, method)(b"", timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: running.handlers.cancelled, timeout=2.5, what="the handler's cancellation")
    assert running.handlers.cancelled == ["hang"]


def test_an_eager_call_runs_its_first_step_at_once_and_a_task_finishes_it(channel: grpc.Channel) -> None:
    assert unary(channel, "Where")(b"", timeout=5) == b"task task "
    assert unary(channel, "EagerWhere")(b"", timeout=5) == b"none none "  # answered without a Task
    # It waited: a Task carried on, in the context the first step set.
    assert unary(channel, "EagerWhere")(b"wait", timeout=5) == b"none task wait"
    assert _VAR.get() == b"unset"
    with pytest.raises(grpc.RpcError) as info:
        unary(channel, "EagerFail")(b"gone", timeout=5)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.NOT_FOUND, "gone")


def test_a_cancelled_stream_cancels_the_handler(running: Running, channel: grpc.Channel) -> None:
    call = stream(channel, "Forever")(b"", timeout=30)
    assert next(call) == b"first"
    assert running.handlers.started.wait(5)
    call.cancel()
    wait_for(lambda: running.handlers.cancelled, timeout=2.5, what="the handler's cancellation")
    assert running.handlers.cancelled == ["forever"]
    assert unary(channel, "Echo")(b"still", timeout=5) == b"still"


def test_a_long_stream_respects_a_slow_reader(channel: grpc.Channel) -> None:
    """3000 messages of 4 KiB (12 MiB, more than the client's window): all of them, in order."""
    got = []
    for i, item in enumerate(stream(channel, "Count")(b"3000", timeout=60)):
        if i % 500 == 0:
            threading.Event().wait(0.1)
        got.append(int(item[:8]))
    assert got == list(range(3000))


@pytest.mark.parametrize("method", ["Hang", "EagerHang"])
def test_stop_lets_a_call_in_flight_finish(running: Running, channel: grpc.Channel, method: str) -> None:
    future = unary(channel, method).future(b"", timeout=30)
    assert running.handlers.started.wait(5)

    async def stop_then_release() -> None:
        stopping = asyncio.ensure_future(running.server.stop(grace=10))
        await asyncio.sleep(0.2)
        assert not stopping.done()  # an eager call's Task is waited for like any other
        running.handlers.release.set()
        await stopping

    running.call(stop_then_release)
    assert future.result(5) == b"released"
    assert not running.path.exists() or not _connects(running.path)


def _connects(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


# ------------------------------------------------------------------------------------------ raw bytes


def _raw(path: Path, data: bytes, *, read: bool = True) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(data)
        if not read:
            return b""
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    while len(data) >= 9:
        n = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], struct.unpack(">I", data[5:9])[0] & 0x7FFFFFFF, data[9:9 + n]))
        data = data[9 + n:]
    return out


@pytest.mark.parametrize("payload", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    h2.PREFACE + h2.frame(h2.DATA, 0, 0, b"x"),
    h2.PREFACE + h2.frame(h2.PUSH_PROMISE, 0, 1, b"\0\0\0\2"),
    h2.PREFACE + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01",
    h2.PREFACE + h2.frame(h2.HEADERS, h2.END_HEADERS, 1, b"\xff\xff\xff\xff"),
    h2.PREFACE + h2.frame(h2.HEADERS, 0, 1, b"") + h2.frame(h2.DATA, 0, 1, b""),
], ids=["http1", "data-on-0", "push", "huge-frame", "bad-hpack", "interrupted-headers"])
def test_protocol_errors_close_that_connection_only(running: Running, channel: grpc.Channel,
                                                     payload: bytes) -> None:
    out = _raw(running.path, payload)
    if payload.startswith(h2.PREFACE):
        kinds = [f[0] for f in _frames(out)]
        assert h2.GOAWAY in kinds
    assert unary(channel, "Echo")(b"fine", timeout=5) == b"fine"


def test_ping_and_a_compressed_request(running: Running) -> None:
    import hpack

    headers = hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", f"/{SERVICE}/Echo"),
                                      (":authority", "x"), ("content-type", "application/grpc")])
    body = b"\1" + struct.pack(">I", 3) + b"abc"
    out = _frames(_raw(running.path, h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0)
                       + h2.frame(h2.PING, 0, 0, b"12345678")
                       + h2.frame(h2.HEADERS, h2.END_HEADERS, 1, headers)
                       + h2.frame(h2.DATA, h2.END_STREAM, 1, body)))
    assert (h2.PING, h2.ACK, 0, b"12345678") in out
    assert (h2.SETTINGS, h2.ACK, 0, b"") in out
    blocks = [f[3] for f in out if f[0] == h2.HEADERS and f[2] == 1]
    fields: dict[str, str] = dict(cast(Any, hpack.Decoder().decode(blocks[-1], raw=False)))
    assert fields["grpc-status"] == str(int(StatusCode.UNIMPLEMENTED))
    assert "compressed" in fields["grpc-message"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 255), st.integers(0, 7),
                          st.binary(max_size=64)), max_size=8))
def test_arbitrary_frames_never_hurt_the_server(running: Running, channel: grpc.Channel,
                                                frames: list[tuple[int, int, int, bytes]]) -> None:
    data = h2.PREFACE + b"".join(h2.frame(kind, flags, sid, payload) for kind, flags, sid, payload in frames)
    _raw(running.path, data, read=False)
    assert unary(channel, "Echo")(b"alive", timeout=5) == b"alive"
