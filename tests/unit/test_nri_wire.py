"""ttrpc framing and the NRI connection multiplexer, on socket pairs (no root, no sleeps)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from crib._proto.nri.v1alpha1 import api_pb2 as api
from crib._proto.ttrpc import ttrpc_pb2 as wire
from crib.nri import mux, ttrpc
from crib.nri.peer import Peer


def test_frame_layout_is_the_published_one() -> None:
    raw = ttrpc.frame(7, ttrpc.REQUEST, b"abc")
    assert raw[:10] == struct.pack(">IIBB", 3, 7, 1, 0)
    assert ttrpc.parse_header(raw[:10]) == (3, 7, 1, 0)


def test_oversized_length_is_a_protocol_error() -> None:
    with pytest.raises(ttrpc.ProtocolError, match="exceeds"):
        ttrpc.parse_header(struct.pack(">IIBB", ttrpc.MAX_DATA + 1, 1, 1, 0))
    with pytest.raises(ValueError, match="exceeds"):
        ttrpc.frame(1, ttrpc.REQUEST, b"x" * (ttrpc.MAX_DATA + 1))


async def _pair() -> tuple[
    tuple[asyncio.StreamReader, asyncio.StreamWriter], tuple[asyncio.StreamReader, asyncio.StreamWriter]
]:
    a, b = socket.socketpair()
    return await asyncio.open_unix_connection(sock=a), await asyncio.open_unix_connection(sock=b)


@pytest.fixture
async def peers() -> AsyncIterator[tuple[Peer, Peer, dict[str, object]]]:
    """A runtime side and a plugin side; the plugin serves Configure and CreateContainer as scripted."""
    script: dict[str, object] = {}

    async def configure(req: api.ConfigureRequest) -> api.ConfigureResponse:
        return api.ConfigureResponse(events=len(req.runtime_name))

    async def create(req: api.CreateContainerRequest) -> api.CreateContainerResponse:
        action = script.get("create")
        if isinstance(action, Exception):
            raise action
        if action == "hang":
            await asyncio.sleep(3600)
        return api.CreateContainerResponse(adjust=api.ContainerAdjustment(args=[req.container.id]))

    async def register(req: api.RegisterPluginRequest) -> api.Empty:
        script["registered"] = req.plugin_name
        return api.Empty()

    (r1, w1), (r2, w2) = await _pair()
    runtime = Peer(r1, w1, side="runtime", handlers={"RegisterPlugin": register})
    plugin = Peer(r2, w2, side="plugin", handlers={"Configure": configure, "CreateContainer": create})
    runtime.start()
    plugin.start()
    yield runtime, plugin, script
    runtime.close()
    plugin.close()
    await asyncio.gather(runtime.wait_closed(), plugin.wait_closed())


async def test_calls_both_ways(peers: tuple[Peer, Peer, dict[str, object]]) -> None:
    runtime, plugin, script = peers
    reply = await runtime.call("Configure", api.ConfigureRequest(runtime_name="crib"), 5)
    assert reply.events == 4
    await plugin.call("RegisterPlugin", api.RegisterPluginRequest(plugin_name="p"), 5)
    assert script["registered"] == "p"
    big = api.CreateContainerRequest(container=api.Container(id="c" * 300_000))  # many mux frames
    reply = await runtime.call("CreateContainer", big, 5)
    assert list(reply.adjust.args) == ["c" * 300_000]


@pytest.mark.parametrize(
    ("method", "code"),
    [("Synchronize", ttrpc.UNIMPLEMENTED), ("CreateContainer", 2)],
    ids=["unserved", "handler-error"],
)
async def test_error_statuses(peers: tuple[Peer, Peer, dict[str, object]], method: str, code: int) -> None:
    runtime, _plugin, script = peers
    script["create"] = RuntimeError("no way")
    request = api.SynchronizeRequest() if method == "Synchronize" else api.CreateContainerRequest()
    with pytest.raises(ttrpc.RemoteError) as err:
        await runtime.call(method, request, 5)
    assert err.value.code == code
    if method == "CreateContainer":
        assert err.value.message == "no way"


async def test_timeout_then_the_connection_still_works(peers: tuple[Peer, Peer, dict[str, object]]) -> None:
    runtime, _plugin, script = peers
    script["create"] = "hang"
    with pytest.raises(TimeoutError):
        await runtime.call("CreateContainer", api.CreateContainerRequest(), 0.05)
    script["create"] = None
    reply = await runtime.call(
        "CreateContainer", api.CreateContainerRequest(container=api.Container(id="x")), 5
    )
    assert list(reply.adjust.args) == ["x"]


async def test_writes_are_split_into_small_frames() -> None:
    (r1, w1), (r2, _w2) = await _pair()
    m = mux.Mux(r1, w1)
    await m.write(1, b"y" * (mux.WRITE_CHUNK * 2 + 1))
    sizes = []
    for _ in range(3):
        conn_id, length = mux.FRAME.unpack(await r2.readexactly(8))
        await r2.readexactly(length)
        sizes.append((conn_id, length))
    assert sizes == [(1, mux.WRITE_CHUNK), (1, mux.WRITE_CHUNK), (1, 1)]
    m.close()


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">II", 1, mux.MAX_PAYLOAD + 1),  # a frame longer than any ttrpc message
        struct.pack(">II", 1, 10) + struct.pack(">IIBB", 0, 2, 9, 0),  # ttrpc: unknown message type
        struct.pack(">II", 1, 10) + struct.pack(">IIBB", 0, 2, ttrpc.REQUEST, 0),  # even (server) stream id
    ],
    ids=["oversized-frame", "unknown-type", "even-stream"],
)
async def test_malformed_input_closes_the_connection(garbage: bytes) -> None:
    (r1, w1), (r2, w2) = await _pair()
    plugin = Peer(r1, w1, side="plugin", handlers={})
    plugin.start()
    w2.write(garbage)
    await w2.drain()
    await asyncio.wait_for(plugin.wait_closed(), 5)
    assert "protocol error" in plugin.reason
    assert await r2.read() == b""  # our end was closed too
    w2.close()


async def test_server_answers_an_undecodable_payload_with_invalid_argument() -> None:
    (r1, w1), (r2, w2) = await _pair()
    plugin = Peer(r1, w1, side="plugin", handlers={"Configure": lambda _r: asyncio.sleep(0)})
    plugin.start()
    envelope = wire.Request(service="nri.pkg.api.v1alpha1.Plugin", method="Configure", payload=b"\xff\xff")
    msg = ttrpc.frame(1, ttrpc.REQUEST, envelope.SerializeToString())
    w2.write(mux.FRAME.pack(mux.PLUGIN_SERVICE_CONN, len(msg)) + msg)
    await w2.drain()
    _conn, length = mux.FRAME.unpack(await r2.readexactly(8))
    data = await r2.readexactly(length)
    answer = wire.Response.FromString(data[10:])
    assert answer.status.code == ttrpc.INVALID_ARGUMENT
    plugin.close()
    await plugin.wait_closed()
    w2.close()
