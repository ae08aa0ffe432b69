"""WebSocket (RFC 6455) framing and the Kubernetes channel codecs: pure bytes in, messages out, and back.

Why our own codec rather than a library: the upgrade shares one hand-parsed HTTP request with the SPDY path
(server.py), the same few dozen lines serve the server and the client, and the data path stays a pair of
memory copies (header + payload; unmasking is one big-integer XOR).

Frame: FIN(1) RSV(3) opcode(4) | MASK(1) len(7) [len16 | len64] [mask key(4)] payload. Clients mask every
frame, servers never do. Control frames (close 8, ping 9, pong 10) are at most 125 bytes and never
fragmented; data messages (text 1, binary 2) may arrive in fragments (continuation 0) and are returned
whole.

Kubernetes channel protocols (remote command and port forward over WebSocket): every message starts with
its channel; `*.channel.k8s.io` is binary (one channel byte, then raw data), `*base64.channel.k8s.io` is
text (the channel as the ASCII digit '0'+n, then base64 of the data). `v5.channel.k8s.io` adds the CLOSE
signal: a binary message [255, channel] half-closes that channel.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

# Subprotocols of Kubernetes streaming.
CHANNEL = "channel.k8s.io"
BASE64_CHANNEL = "base64.channel.k8s.io"
V4_CHANNEL = "v4.channel.k8s.io"
V4_BASE64_CHANNEL = "v4.base64.channel.k8s.io"
V5_CHANNEL = "v5.channel.k8s.io"
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"  # SPDY tunnelled in binary messages (port forward from kubectl/crictl)

STREAM_CLOSE = 255  # v5 CLOSE signal: [255, channel]

MAX_MESSAGE = 16 * 1024 * 1024

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")


class ProtocolError(Exception):
    """The peer broke WebSocket framing; close with 1002 (or 1009 for an oversized message)."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key.strip() + GUID).encode()).digest()).decode()


def mask_bytes(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """XOR data with the 4-byte masking key (its own inverse)."""
    n = len(data)
    if n == 0:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


def frame_header(opcode: int, length: int, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """The header of one frame (with its masking key when mask is given); the payload follows it."""
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes([first, bit | length])
    elif length < 65536:
        head = bytes([first, bit | 126]) + _U16.pack(length)
    else:
        head = bytes([first, bit | 127]) + _U64.pack(length)
    return head + mask if mask is not None else head


def encode(opcode: int, payload: bytes, *, mask: bytes | None = None) -> bytes:
    """One whole frame: unmasked from a server, masked with the 4-byte key from a client."""
    body = mask_bytes(payload, mask) if mask is not None else payload
    return frame_header(opcode, len(payload), mask=mask) + body


def close_payload(code: int, reason: str = "") -> bytes:
    return _U16.pack(code) + reason.encode()[:123]


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a close frame; 1005 (no status) for an empty one."""
    if len(payload) < 2:
        return 1005, ""
    return _U16.unpack_from(payload)[0], payload[2:].decode(errors="replace")


@dataclass(frozen=True, slots=True)
class Message:
    """A whole data message (TEXT or BINARY) or one control frame (CLOSE, PING, PONG)."""

    opcode: int
    payload: bytes


class Decoder:
    """Frames of one direction in, whole messages out.

    Args:
        masked: whether the peer must mask (True on a server: clients always mask) or must not.
        max_message: the largest reassembled message accepted.
    """

    def __init__(self, *, masked: bool, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._masked = masked
        self._max = max_message
        self._parts: list[bytes] = []
        self._parts_len = 0
        self._opcode = 0

    def feed(self, data: bytes) -> list[Message]:
        """Add bytes from the peer; return every message now complete.

        Raises:
            ProtocolError: bad framing, a wrong masking, or a message over max_message.
        """
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            fin, opcode, masked, length = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            if b0 & 0x70:
                raise ProtocolError("reserved bits set; no extension was negotiated")
            if bool(masked) != self._masked:
                raise ProtocolError("client frames must be masked" if self._masked
                                    else "server frames must not be masked")
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                (length,) = _U16.unpack_from(buf, pos + 2)
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                (length,) = _U64.unpack_from(buf, pos + 2)
                head = 10
            if length > self._max:
                raise ProtocolError(f"a frame of {length} bytes is over the {self._max} limit", CLOSE_TOO_BIG)
            key_at = pos + head
            start = key_at + (4 if masked else 0)
            if end - start < length:
                break
            raw = buf[start:start + length]
            payload = mask_bytes(raw, bytes(buf[key_at:start])) if masked else bytes(raw)
            pos = start + length
            self._frame(fin, opcode, payload, out)
        if pos:
            del buf[:pos]
        return out

    def _frame(self, fin: int, opcode: int, payload: bytes, out: list[Message]) -> None:
        if opcode >= CLOSE:
            if opcode not in (CLOSE, PING, PONG):
                raise ProtocolError(f"unknown control opcode {opcode}")
            if not fin or len(payload) > 125:
                raise ProtocolError("a control frame must be whole and at most 125 bytes")
            out.append(Message(opcode, payload))
            return
        if opcode == CONTINUATION:
            if not self._parts and not self._opcode:
                raise ProtocolError("a continuation frame without a message to continue")
        elif opcode in (TEXT, BINARY):
            if self._opcode:
                raise ProtocolError("a new message began inside a fragmented one")
            self._opcode = opcode
        else:
            raise ProtocolError(f"unknown data opcode {opcode}")
        self._parts_len += len(payload)
        if self._parts_len > self._max:
            raise ProtocolError(f"a message over the {self._max} byte limit", CLOSE_TOO_BIG)
        if fin:
            whole = payload if not self._parts else b"".join([*self._parts, payload])
            out.append(Message(self._opcode, whole))
            self._parts, self._parts_len, self._opcode = [], 0, 0
        else:
            self._parts.append(payload)


# ---------------------------------------------------------------------------- Kubernetes channel codecs


def is_base64(protocol: str) -> bool:
    """Whether a channel subprotocol carries base64 text frames."""
    return "base64" in protocol


def channel_frame(channel: int, data: bytes | memoryview, *, base64_text: bool) -> tuple[int, bytes]:
    """(opcode, payload) of data on a channel, binary or base64 text as the subprotocol says."""
    if base64_text:
        return TEXT, bytes([0x30 + channel]) + base64.b64encode(data)
    return BINARY, bytes([channel]) + data


def split_channel(message: Message, *, base64_text: bool) -> tuple[int, bytes]:
    """(channel, data) of a channel message.

    Raises:
        ProtocolError: an empty message, or base64 that does not decode.
    """
    payload = message.payload
    if not payload:
        raise ProtocolError("an empty channel message (no channel byte)")
    if not base64_text or message.opcode == BINARY:
        return payload[0], payload[1:]
    try:
        return payload[0] - 0x30, base64.b64decode(payload[1:], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"channel data is not base64: {exc}") from None


__all__ = [
    "BASE64_CHANNEL", "BINARY", "CHANNEL", "CLOSE", "CLOSE_GOING_AWAY", "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR", "CLOSE_TOO_BIG", "PING", "PONG", "SPDY_TUNNEL_PREFIX", "STREAM_CLOSE", "TEXT",
    "V4_BASE64_CHANNEL", "V4_CHANNEL", "V5_CHANNEL", "Decoder", "Message", "ProtocolError", "accept_key",
    "channel_frame", "close_payload", "encode", "frame_header", "is_base64", "mask_bytes", "parse_close",
    "split_channel",
]
