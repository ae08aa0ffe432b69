"""The interceptor's wrappers: domain errors become their status, surprises become INTERNAL."""

from __future__ import annotations

from typing import Any

import pytest

from crib import errors
from crib._proto.runtime.v1 import api_pb2 as api
from crib.cri.h2server import AbortError, Context, StatusCode
from crib.cri.interceptors import _tolerant, _wrap_stream, _wrap_unary


class FakeContext(Context):
    """The server's own context, recording what the call was aborted with."""

    def __init__(self) -> None:
        super().__init__([], None)
        self.aborted: tuple[StatusCode, str] | None = None

    async def abort(self, code: StatusCode, message: str) -> None:  # type: ignore[override]
        self.aborted = (code, message)
        await super().abort(code, message)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.NotFound("container 'x' not found"), StatusCode.NOT_FOUND),
        (errors.InvalidArgument("bad"), StatusCode.INVALID_ARGUMENT),
        (errors.ExternalCommandError("runc exited with status 1: boom"), StatusCode.UNKNOWN),
        (KeyError("surprise"), StatusCode.INTERNAL),
    ],
    ids=["not-found", "invalid", "external", "unexpected"],
)
async def test_unary_errors_become_statuses(exc: Exception, code: StatusCode) -> None:
    async def inner(request: Any, context: Any) -> Any:
        raise exc

    ctx = FakeContext()
    with pytest.raises(AbortError):
        await _wrap_unary("StopContainer", inner)(api.StopContainerRequest(container_id="x"), ctx)
    assert ctx.aborted is not None
    assert ctx.aborted[0] == code
    if code == StatusCode.INTERNAL:
        assert "internal error in StopContainer: KeyError" in ctx.aborted[1]
    else:
        assert ctx.aborted[1] == str(exc)


async def test_unary_success_passes_the_reply_through() -> None:
    async def inner(request: Any, context: Any) -> Any:
        return api.VersionResponse(version="0.1.0")

    reply = await _wrap_unary("Version", inner)(api.VersionRequest(), FakeContext())
    assert reply.version == "0.1.0"


async def test_stream_yields_items_then_maps_a_late_error() -> None:
    async def inner(request: Any, context: Any) -> Any:
        yield api.ContainerEventResponse(container_id="a")
        raise errors.Unavailable("event source closed")

    ctx = FakeContext()
    got: list[str] = []

    async def consume() -> None:
        async for item in _wrap_stream("GetContainerEvents", inner)(api.GetEventsRequest(), ctx):
            got.append(item.container_id)

    with pytest.raises(AbortError):
        await consume()
    assert got == ["a"]
    assert ctx.aborted == (StatusCode.UNAVAILABLE, "event source closed")


@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b"\x0a\x02\xff\xfe", b"\x0a\x10short"],
                         ids=["corrupt-wire", "bad-utf8", "truncated"])
async def test_undecodable_request_is_invalid_argument(raw: bytes) -> None:
    """Bytes that do not parse reach the handler as a marker: INVALID_ARGUMENT, no traceback."""
    called = []

    async def inner(request: Any, context: Any) -> Any:
        called.append(request)
        return api.VersionResponse()

    request = _tolerant(api.VersionRequest.FromString)(raw)  # type: ignore[misc]
    ctx = FakeContext()
    with pytest.raises(AbortError):
        await _wrap_unary("Version", inner)(request, ctx)
    assert not called
    assert ctx.aborted is not None
    assert ctx.aborted[0] == StatusCode.INVALID_ARGUMENT
    assert "Version: the request bytes are not a valid protobuf message" in ctx.aborted[1]
    assert "runtime.v1.VersionRequest" in ctx.aborted[1]


def test_tolerant_deserializer_passes_good_bytes_through() -> None:
    good = api.VersionRequest(version="v1").SerializeToString()
    assert _tolerant(api.VersionRequest.FromString)(good) == api.VersionRequest(version="v1")  # type: ignore[misc]


async def test_a_full_disk_is_resource_exhausted_not_internal() -> None:
    async def inner(request: Any, context: Any) -> Any:
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise RuntimeError("writing the layer failed") from exc

    ctx = FakeContext()
    with pytest.raises(AbortError):
        await _wrap_unary("PullImage", inner)(api.PullImageRequest(), ctx)
    assert ctx.aborted is not None
    assert ctx.aborted[0] == StatusCode.RESOURCE_EXHAUSTED
    assert "PullImage: the node's disk is full" in ctx.aborted[1]
