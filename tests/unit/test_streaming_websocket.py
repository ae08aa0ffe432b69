"""WebSocket framing (RFC 6455) and the Kubernetes channel codecs."""

from __future__ import annotations

import os

import pytest

from crib.streaming import websocket as ws


def test_accept_key_rfc_example() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_mask_is_its_own_inverse() -> None:
    data, key = os.urandom(1001), b"\x01\x02\x03\x04"
    assert ws.mask_bytes(ws.mask_bytes(data, key), key) == data
    assert ws.mask_bytes(b"\x00\x00\x00\x00\x00", key) == b"\x01\x02\x03\x04\x01"
    assert ws.mask_bytes(b"", key) == b""


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000], ids=str)
@pytest.mark.parametrize("masked", [True, False], ids=["client", "server"])
def test_roundtrip_lengths(size: int, masked: bool) -> None:
    payload = os.urandom(size)
    raw = ws.encode(ws.BINARY, payload, mask=os.urandom(4) if masked else None)
    assert ws.Decoder(masked=masked).feed(raw) == [ws.Message(ws.BINARY, payload)]


def test_header_encodings() -> None:
    assert ws.frame_header(ws.TEXT, 5) == b"\x81\x05"
    assert ws.frame_header(ws.BINARY, 126) == b"\x82\x7e\x00\x7e"
    assert ws.frame_header(ws.BINARY, 65536) == b"\x82\x7f" + (65536).to_bytes(8, "big")
    assert ws.frame_header(ws.BINARY, 3, mask=b"abcd") == b"\x82\x83abcd"


def test_fragments_reassemble_with_control_frames_between() -> None:
    key = b"\x00\x00\x00\x00"
    raw = (bytes([0x01, 0x83]) + key + b"abc"        # TEXT, not final
           + bytes([0x89, 0x82]) + key + b"hi"       # PING in the middle
           + bytes([0x80, 0x82]) + key + b"de")      # final continuation
    decoder = ws.Decoder(masked=True)
    out = []
    for i in range(len(raw)):  # any split
        out += decoder.feed(raw[i:i + 1])
    assert out == [ws.Message(ws.PING, b"hi"), ws.Message(ws.TEXT, b"abcde")]


@pytest.mark.parametrize(("raw", "masked", "match"), [
    (b"\x82\x01x", True, "must be masked"),
    (b"\x82\x81abcdx", False, "must not be masked"),
    (b"\xc2\x00", False, "reserved bits"),
    (b"\x80\x00", False, "without a message"),
    (b"\x83\x00", False, "unknown data opcode"),
    (b"\x0b\x00", False, "unknown control opcode"),
    (b"\x09\x00", False, "control frame must be whole"),
    (b"\x02\x00\x82\x00", False, "inside a fragmented"),
], ids=["unmasked", "masked", "rsv", "continuation", "opcode", "control-opcode", "fragmented-ping", "nested"])
def test_framing_errors(raw: bytes, masked: bool, match: str) -> None:
    with pytest.raises(ws.ProtocolError, match=match):
        ws.Decoder(masked=masked).feed(raw)


def test_oversized_message() -> None:
    decoder = ws.Decoder(masked=False, max_message=10)
    with pytest.raises(ws.ProtocolError) as info:
        decoder.feed(ws.frame_header(ws.BINARY, 11))
    assert info.value.code == ws.CLOSE_TOO_BIG


def test_close_payload() -> None:
    assert ws.parse_close(ws.close_payload(1001, "bye")) == (1001, "bye")
    assert ws.parse_close(b"") == (1005, "")


@pytest.mark.parametrize("base64_text", [False, True], ids=["binary", "base64"])
def test_channel_codec(base64_text: bool) -> None:
    opcode, payload = ws.channel_frame(3, b"\x00\xffdata", base64_text=base64_text)
    assert opcode == (ws.TEXT if base64_text else ws.BINARY)
    if base64_text:
        assert payload == b"3AP9kYXRh"
    assert ws.split_channel(ws.Message(opcode, payload), base64_text=base64_text) == (3, b"\x00\xffdata")


def test_channel_codec_errors() -> None:
    with pytest.raises(ws.ProtocolError, match="empty"):
        ws.split_channel(ws.Message(ws.BINARY, b""), base64_text=False)
    with pytest.raises(ws.ProtocolError, match="base64"):
        ws.split_channel(ws.Message(ws.TEXT, b"0!!!"), base64_text=True)
    assert ws.is_base64(ws.V4_BASE64_CHANNEL)
    assert not ws.is_base64(ws.V5_CHANNEL)
