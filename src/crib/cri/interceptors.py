"""Per-RPC wrapper: one structured log line per RPC, and errors turned into statuses.

Every RPC passes through here, so this is where a domain error becomes its gRPC status (via
cri/status.py) and where an unexpected exception is logged with its traceback and answered with
INTERNAL instead of taking the daemon down. It is on every call's hot path: keep additions O(1) and
allocation-light (board contract 4), and do nothing for a call that will not be logged.

A request whose bytes are not a valid message (truncated, wrong wire types, invalid UTF-8 in a string) is
bad input, not a crash, and gets the same log line as any other failed call: so the deserializer is
wrapped to hand the handler an `_Undecodable` marker instead, answered INVALID_ARGUMENT with the call's
one log line. On the success path that costs one try block and one type check per call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from crib import errors, log
from crib.cri.h2server import AbortError, Context, Method, StatusCode
from crib.cri.status import code_for, disk_full
from crib.metrics import ops

_log = log.get(__name__)

# Request fields worth a place in the log line, as dotted paths into the request message.
_KEY_FIELDS = (
    ("pod", "pod_sandbox_id"),
    ("container", "container_id"),
    ("image", "image.image"),
    ("name", "config.metadata.name"),
    ("cmd", "cmd"),
)


def _lookup(msg: Message, path: str) -> Any:
    value: Any = msg
    for part in path.split("."):
        if not isinstance(value, Message) or part not in value.DESCRIPTOR.fields_by_name:
            return None
        value = getattr(value, part)
    if isinstance(value, Message):
        return None
    return value or None


def request_fields(request: Any) -> dict[str, Any]:
    """The identifying fields of a request for the log line; never credentials."""
    if not isinstance(request, Message):
        return {}
    out: dict[str, Any] = {}
    for key, path in _KEY_FIELDS:
        value = _lookup(request, path)
        if value is not None:
            out[key] = list(value) if not isinstance(value, str | int | bool) else value
    return out


class _Undecodable:
    """Stands in for a request whose bytes did not parse (see the module note)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # DecodeError; anything else a parser of untrusted bytes may raise
            return _Undecodable(f"{type(exc).__name__}: {exc}")

    return deserialize


def _undecodable(method: str, request: _Undecodable) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"{method}: the request bytes are not a valid protobuf message for this "
                                  f"RPC ({request.reason}); check the client and its CRI API version")


class _Call:
    """Bookkeeping for one RPC: its start, its outcome, and the final log line.

    Cheap on purpose (kubelet polls status and list calls every second per pod): the request's fields are
    only looked up when the line is really logged, which a polled call that succeeds is not at info.
    """

    __slots__ = ("code", "message", "method", "request", "start")

    def __init__(self, method: str, request: Any) -> None:
        self.method = method
        self.request = request
        self.start = time.monotonic()
        self.code = StatusCode.OK
        self.message = ""

    async def fail(self, context: Context, exc: BaseException) -> None:
        """Abort the RPC with the status that exc maps to; always raises."""
        if isinstance(exc, errors.CribError):
            self.code, self.message = code_for(exc), str(exc)
        elif disk_full(exc):
            self.code = StatusCode.RESOURCE_EXHAUSTED
            self.message = (f"{self.method}: the node's disk is full ({type(exc).__name__}: {exc}); "
                            "free space under crib's root and retry")
        else:
            self.code = StatusCode.INTERNAL
            self.message = f"internal error in {self.method}: {type(exc).__name__}: {exc}"
            _log.error("unexpected error in %s", self.method, exc_info=exc,
                       extra={"fields": request_fields(self.request)})
        await context.abort(self.code, self.message)

    async def settle(self, context: Context, exc: BaseException) -> None:
        """Record how the RPC ended with exc; an ordinary exception becomes its status (fail() raises)."""
        if isinstance(exc, AbortError):
            self.code = context.code() or StatusCode.UNKNOWN
        elif isinstance(exc, asyncio.CancelledError):
            self.code = StatusCode.CANCELLED
        elif isinstance(exc, Exception):
            await self.fail(context, exc)

    def done(self) -> None:
        code = self.code
        elapsed = time.monotonic() - self.start
        ops.OPERATIONS.record(self.method, code, elapsed)
        level = logging.INFO if code is StatusCode.OK else logging.WARNING
        if self.method in _QUIET and (code is StatusCode.OK or code is StatusCode.NOT_FOUND):
            level = logging.DEBUG
        if not _log.isEnabledFor(level):
            return
        log.event(_log, level, "rpc", method=self.method, **request_fields(self.request),
                  code=code.name, duration_ms=round(elapsed * 1000, 3),
                  error=self.message or None)


# Polled constantly by kubelet and crictl; logged at debug so that real work stays visible at info.
_QUIET = frozenset({
    "Version", "Status", "ListPodSandbox", "ListContainers", "ListImages", "ImageStatus", "ContainerStatus",
    "PodSandboxStatus", "ListContainerStats", "ListPodSandboxStats", "ImageFsInfo", "ContainerStats",
    "PodSandboxStats", "ListPodSandboxMetrics", "ListMetricDescriptors", "StreamPodSandboxes",
    "StreamContainers", "StreamContainerStats", "StreamPodSandboxStats", "StreamPodSandboxMetrics",
    "StreamImages",
})


def _wrap_unary(method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    # One plain try/except rather than a context manager: this runs on every call.
    async def behavior(request: Any, context: Context) -> Any:
        call = _Call(method, request)
        try:
            if type(request) is _Undecodable:
                raise _undecodable(method, request)
            return await inner(request, context)
        except BaseException as exc:
            await call.settle(context, exc)
            raise
        finally:
            call.done()

    return behavior


def _wrap_stream(method: str, inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def behavior(request: Any, context: Context) -> AsyncIterator[Any]:
        call = _Call(method, request)
        try:
            if type(request) is _Undecodable:
                raise _undecodable(method, request)
            result = inner(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result
        except BaseException as exc:
            await call.settle(context, exc)
            raise
        finally:
            call.done()

    return behavior


def _passing_bytes(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """The response serializer, except that a servicer's already serialized reply goes out as it is
    (the polled calls answer from cached bytes: cri/wire.py)."""

    def serializer(response: Any) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serializer


def instrument(method: str, handler: Method) -> Method:
    """The handler of one RPC, wrapped once at registration: logged, errors mapped to statuses.

    Why not an interceptor chain run on every call (what grpc.aio's ServerInterceptor is): wrapping each
    handler once when the services are registered does the same work for a fraction of the cost (see
    bench/README.md, "calls").
    """
    wrap = _wrap_stream if handler.streaming else _wrap_unary
    return Method(handler=wrap(method, handler.handler), deserialize=_tolerant(handler.deserialize),
                  serialize=_passing_bytes(handler.serialize), streaming=handler.streaming,
                  eager=handler.eager)


def instrumented_handlers(handlers: dict[str, Method]) -> dict[str, Method]:
    """A service's methods, each instrument()ed."""
    return {name: instrument(name, handler) for name, handler in handlers.items()}


__all__ = ["instrument", "instrumented_handlers", "request_fields"]
