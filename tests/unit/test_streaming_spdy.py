"""SPDY/3.1 framing: layouts, header compression across blocks, any byte split, and malformed input."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from crib.streaming import spdy


def roundtrip(raw: bytes, decoder: spdy.Decoder | None = None) -> list[spdy.Frame]:
    return (decoder or spdy.Decoder()).feed(raw)


def test_dictionary_is_the_spdy3_one() -> None:
    # 1423 bytes; the digest is that of the dictionary as the SPDY/3 draft lists it byte by byte.
    assert len(spdy.DICTIONARY) == 1423
    assert hashlib.sha256(spdy.DICTIONARY).hexdigest() == \
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"utf-,*,enq=0.")


def test_control_frame_layout() -> None:
    raw = spdy.Encoder.rst_stream(5, spdy.CANCEL)
    # |1| version 3 | type 3 |, flags 0, length 8, stream id, status
    assert raw == struct.pack(">HHII", 0x8003, 3, 8, 5) + struct.pack(">I", spdy.CANCEL)
    raw = spdy.Encoder.window_update(0, 1000)
    assert raw[:8] == struct.pack(">HHI", 0x8003, 9, 8)


def test_data_frame_layout() -> None:
    raw = spdy.Encoder.data(7, b"abc", fin=True)
    assert raw == struct.pack(">II", 7, (1 << 24) | 3) + b"abc"
    with pytest.raises(ValueError, match="at most"):
        spdy.data_header(1, 1 << 24)


@pytest.mark.parametrize("frame", [
    spdy.Encoder.rst_stream(3, spdy.REFUSED_STREAM),
    spdy.Encoder.settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20,
                           spdy.SETTINGS_MAX_CONCURRENT_STREAMS: 9}),
    spdy.Encoder.ping(42),
    spdy.Encoder.goaway(11, spdy.GOAWAY_PROTOCOL_ERROR),
    spdy.Encoder.window_update(3, 65536),
    spdy.Encoder.data(9, b"x" * 70000, fin=False),
], ids=["rst", "settings", "ping", "goaway", "window_update", "data"])
def test_simple_frames_roundtrip(frame: bytes) -> None:
    (decoded,) = roundtrip(frame)
    expected = {
        spdy.RstStream: spdy.RstStream(3, spdy.REFUSED_STREAM),
        spdy.Settings: spdy.Settings({7: 1 << 20, 4: 9}),
        spdy.Ping: spdy.Ping(42),
        spdy.GoAway: spdy.GoAway(11, spdy.GOAWAY_PROTOCOL_ERROR),
        spdy.WindowUpdate: spdy.WindowUpdate(3, 65536),
        spdy.DataFrame: spdy.DataFrame(9, 0, b"x" * 70000),
    }[type(decoded)]
    assert decoded == expected


def test_header_blocks_share_one_compression_stream() -> None:
    enc, dec = spdy.Encoder(), spdy.Decoder()
    first = enc.syn_stream(1, {"streamType": "error", "port": "80"}, priority=3)
    second = enc.syn_reply(1, {"x": "y"}, fin=True)
    third = enc.headers(1, {"streamtype": "error"})
    (a,) = dec.feed(first)
    (b,) = dec.feed(second)
    (c,) = dec.feed(third)
    assert a == spdy.SynStream(1, {"streamtype": "error", "port": "80"}, 0, 0, 3)
    assert b == spdy.SynReply(1, {"x": "y"}, spdy.FLAG_FIN)
    assert b.fin
    assert c == spdy.HeadersFrame(1, {"streamtype": "error"}, 0)
    # The third block repeats the first's words: the shared zlib window makes it tiny.
    assert len(third) < len(first)
    # A fresh decoder cannot read a block from the middle of the stream.
    with pytest.raises(spdy.ProtocolError):
        spdy.Decoder().feed(second)


def test_any_split_of_the_byte_stream() -> None:
    enc = spdy.Encoder()
    wire = b"".join([enc.syn_stream(1, {"streamtype": "stdout"}), spdy.Encoder.data(1, b"hello"),
                     spdy.Encoder.ping(2), spdy.Encoder.data(1, b"", fin=True)])
    dec = spdy.Decoder()
    frames = []
    for i in range(len(wire)):
        frames += dec.feed(wire[i:i + 1])
    assert [type(f) for f in frames] == [spdy.SynStream, spdy.DataFrame, spdy.Ping, spdy.DataFrame]
    assert frames[1].data == b"hello"
    assert frames[3].fin
    assert dec.buffered == 0


def test_multiple_values_are_nul_joined() -> None:
    block = spdy.pack_headers({"a": "1\x002", "B": "x"})
    assert spdy.unpack_headers(block) == {"a": "1\x002", "b": "x"}
    # a repeated name (not allowed by SPDY/3, tolerated) joins its values the same way
    twice = struct.pack(">I", 2) + (struct.pack(">I", 1) + b"a" + struct.pack(">I", 1) + b"1") * 2
    assert spdy.unpack_headers(twice) == {"a": "1\x001"}


def _control(kind: int, payload: bytes, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, kind, len(payload)) + payload


@pytest.mark.parametrize(("raw", "match"), [
    (_control(6, b"\0\0\0\1", version=2), "version 2"),
    (struct.pack(">II", 0, 1) + b"x", "stream 0"),
    (_control(3, b"\0\0\0\1"), "RST_STREAM frame of 4 bytes"),
    (_control(6, b"\0\0"), "PING frame of 2 bytes"),
    (_control(4, struct.pack(">I", 3) + b"\0" * 8), "SETTINGS"),
    (_control(2, b"\0\0\0\1" + b"not zlib"), "decompress"),
    (spdy.Encoder().syn_stream(0, {"a": "b"}), "SYN_STREAM on stream 0"),
], ids=["version", "data-stream-0", "rst-size", "ping-size", "settings-count", "bad-zlib", "syn-stream-0"])
def test_malformed_frames_are_protocol_errors(raw: bytes, match: str) -> None:
    with pytest.raises(spdy.ProtocolError, match=match):
        spdy.Decoder().feed(raw)


def test_unknown_control_types_are_ignored() -> None:
    noop = _control(5, b"")
    assert spdy.Decoder().feed(noop + spdy.Encoder.ping(1)) == [spdy.Ping(1)]


def test_frame_length_limit() -> None:
    with pytest.raises(spdy.ProtocolError, match="exceeds"):
        spdy.Decoder(max_frame=1024).feed(spdy.data_header(1, 2048))


def test_header_bomb_is_refused() -> None:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
    huge = spdy.pack_headers({"a": "x" * (spdy.MAX_HEADER_BLOCK + 10)})
    block = deflate.compress(huge) + deflate.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(spdy.ProtocolError, match="more than"):
        spdy.Decoder().feed(_control(2, struct.pack(">I", 1) + block))
