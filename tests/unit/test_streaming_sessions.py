"""Tokens, session counts, status messages, and SPDY connection flow control on a fake transport."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from crib.errors import ResourceExhausted
from crib.streaming import client, remotecommand, spdy
from crib.streaming.backend import ExecRequest, Kind, PortForwardRequest
from crib.streaming.sessions import Sessions, TokenCache
from crib.streaming.spdyconn import SpdyConnection


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tokens_are_single_use_and_expire() -> None:
    clock = Clock()
    cache = TokenCache(30.0, clock=clock)
    request = ExecRequest(container_id="c", cmd=("true",))
    token = cache.issue(request)
    assert len(token) >= 40
    assert token != cache.issue(request)
    assert cache.take(token) is request
    assert cache.take(token) is None  # used
    late = cache.issue(request)
    clock.now += 30.0
    assert cache.take(late) is None  # expired
    assert cache.take("no-such-token") is None


def test_tokens_are_bounded() -> None:
    clock = Clock()
    cache = TokenCache(30.0, max_tokens=2, clock=clock)
    cache.issue(PortForwardRequest(sandbox_id="p"))
    cache.issue(PortForwardRequest(sandbox_id="p"))
    with pytest.raises(ResourceExhausted, match="at most 2"):
        cache.issue(PortForwardRequest(sandbox_id="p"))
    clock.now += 31
    assert len(cache) == 0
    cache.issue(PortForwardRequest(sandbox_id="p"))


async def test_session_counts_per_kind() -> None:
    sessions = Sessions()
    release = asyncio.Event()
    assert sessions.counts() == {"exec": 0, "attach": 0, "portforward": 0}
    task = sessions.spawn(Kind.EXEC, release.wait())  # type: ignore[arg-type]
    sessions.spawn(Kind.PORTFORWARD, release.wait())  # type: ignore[arg-type]
    assert sessions.counts() == {"exec": 1, "attach": 0, "portforward": 1}
    release.set()
    await task
    await asyncio.sleep(0)
    assert sessions.counts() == {"exec": 0, "attach": 0, "portforward": 0}
    hang = sessions.spawn(Kind.ATTACH, asyncio.Event().wait())  # type: ignore[arg-type]
    await sessions.close(grace=1.0)
    assert hang.cancelled()
    assert sessions.counts()["attach"] == 0


@pytest.mark.parametrize(("version", "code", "error"), [
    (5, 0, ""), (4, 1, ""), (4, 137, ""), (5, 0, "no such binary"), (3, 0, ""), (2, 7, ""), (1, 0, "boom")],
    ids=["v5-ok", "v4-1", "v4-137", "v5-internal", "v3-ok", "v2-7", "v1-error"])
def test_status_roundtrip(version: int, code: int, error: str) -> None:
    payload = remotecommand.status(version, exit_code=code, error=error, cmd=("sh", "-c", "x"))
    if error:
        with pytest.raises(client.RemoteError, match=error):
            client.decode_status(version, payload)
        return
    assert client.decode_status(version, payload).code == code
    if version >= 4 and code:
        doc = json.loads(payload)
        assert doc["reason"] == "NonZeroExitCode"
        assert doc["details"]["causes"] == [{"reason": "ExitCode", "message": str(code)}]
    if version < 4 and not code:
        assert payload == b""


def test_protocol_versions() -> None:
    assert [remotecommand.protocol_version(p) for p in remotecommand.SPDY_PROTOCOLS] == [5, 4, 3, 2, 1]
    assert remotecommand.protocol_version("v4.base64.channel.k8s.io") == 4
    assert remotecommand.protocol_version("") == 1


# ------------------------------------------------------------------------------ SPDY connection, fake I/O


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.reading = True
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def frames(self, decoder: spdy.Decoder) -> list[spdy.Frame]:
        out, self.out = bytes(self.out), bytearray()
        return decoder.feed(out)


def server_conn(**kw: Any) -> tuple[SpdyConnection, FakeTransport, spdy.Encoder, spdy.Decoder, list[Any]]:
    opened: list[Any] = []
    conn = SpdyConnection(server=True, on_stream=opened.append, **kw)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport, spdy.Encoder(), spdy.Decoder(), opened


async def test_server_announces_its_windows_and_answers_pings() -> None:
    conn, transport, enc, dec, _ = server_conn(recv_window=1000)
    first = transport.frames(dec)
    assert spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1000}) in first
    assert any(isinstance(f, spdy.WindowUpdate) and f.stream_id == 0 for f in first)
    conn.data_received(enc.ping(7))  # a client's (odd) ping is echoed
    assert transport.frames(dec) == [spdy.Ping(7)]
    conn.data_received(enc.ping(8))  # an even one would answer ours: not echoed
    assert transport.frames(dec) == []


async def test_stream_ids_must_grow_with_the_peers_parity() -> None:
    conn, transport, enc, dec, opened = server_conn()
    transport.frames(dec)
    conn.data_received(enc.syn_stream(3, {"streamtype": "error"}))
    conn.data_received(enc.syn_stream(1, {"streamtype": "stdout"}))  # not increasing
    conn.data_received(enc.syn_stream(4, {"streamtype": "stdout"}))  # a server's id
    assert [s.id for s in opened] == [3]
    expected = [spdy.RstStream(1, spdy.PROTOCOL_ERROR), spdy.RstStream(4, spdy.PROTOCOL_ERROR)]
    assert transport.frames(dec) == expected


async def test_no_peer_flow_control_means_no_window_limit() -> None:
    conn, transport, enc, dec, opened = server_conn()
    conn.data_received(enc.syn_stream(1, {"streamtype": "stdout"}))
    conn.accept(opened[0])
    transport.frames(dec)
    await opened[0].write(b"x" * 300_000)  # spdystream peers send no WINDOW_UPDATE: TCP brakes them
    sent = sum(len(f.data) for f in transport.frames(dec) if isinstance(f, spdy.DataFrame))
    assert sent == 300_000
    assert not conn.flow_control


async def test_peer_windows_are_honoured_once_announced() -> None:
    conn, transport, enc, dec, opened = server_conn()
    conn.data_received(enc.settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1000}))
    conn.data_received(enc.syn_stream(1, {"streamtype": "stdout"}))
    stream = opened[0]
    conn.accept(stream)
    transport.frames(dec)
    writer = asyncio.ensure_future(stream.write(b"y" * 5000))
    await asyncio.sleep(0)

    def data_sent() -> int:
        return sum(len(f.data) for f in transport.frames(dec) if isinstance(f, spdy.DataFrame))

    assert data_sent() == 1000
    assert not writer.done()
    conn.data_received(enc.window_update(1, 2500))
    await asyncio.sleep(0)
    assert data_sent() == 2500
    assert not writer.done()
    conn.data_received(enc.window_update(1, 10_000))
    await writer
    assert data_sent() == 1500


@pytest.mark.parametrize("peer_flow_control", [True, False], ids=["spdy31-peer", "spdystream-peer"])
async def test_unread_data_stops_reading_and_credits_on_consumption(peer_flow_control: bool) -> None:
    conn, transport, enc, dec, opened = server_conn(recv_window=4096)
    if peer_flow_control:
        conn.data_received(enc.settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 65536}))
    conn.data_received(enc.syn_stream(1, {"streamtype": "stdin"}))
    stream = opened[0]
    transport.frames(dec)
    for _ in range(3):
        conn.data_received(enc.data(1, b"z" * 2048))
    assert not transport.reading  # 6 KiB unread > the 4 KiB window: TCP is the brake now
    assert await stream.read() == b"z" * 2048
    assert await stream.read() == b"z" * 2048
    assert transport.reading
    updates = [f for f in transport.frames(dec) if isinstance(f, spdy.WindowUpdate) and f.stream_id == 1]
    # Credits only to a peer that uses them (one that does not would leave them unread).
    assert sum(u.delta for u in updates) == (4096 if peer_flow_control else 0)
    conn.data_received(enc.data(1, b"", fin=True))
    assert await stream.read() == b"z" * 2048
    assert await stream.read() == b""


async def test_reset_fails_readers_and_writers() -> None:
    conn, _transport, enc, _dec, opened = server_conn()
    conn.data_received(enc.syn_stream(1, {"streamtype": "stdout"}))
    stream = opened[0]
    reader = asyncio.ensure_future(stream.read())
    await asyncio.sleep(0)
    conn.data_received(enc.rst_stream(1, spdy.CANCEL))
    with pytest.raises(ConnectionError, match="reset"):
        await reader
    with pytest.raises(ConnectionError):
        await stream.write(b"late")


async def test_protocol_error_sends_goaway_and_drops() -> None:
    conn, transport, _enc, dec, _ = server_conn()
    transport.frames(dec)
    conn.data_received(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")  # SPDY/2 ping
    assert spdy.GoAway(0, spdy.GOAWAY_PROTOCOL_ERROR) in transport.frames(dec)
    assert conn.closed
    assert transport.closed


async def test_linger_close_survives_a_peer_already_gone() -> None:
    from crib.streaming._transport import linger_close

    class Gone(FakeTransport):
        def can_write_eof(self) -> bool:
            return True

        def write_eof(self) -> None:
            raise OSError(107, "Transport endpoint is not connected")

    transport = Gone()
    linger_close(transport)  # no exception: closed at once
    assert transport.closed
