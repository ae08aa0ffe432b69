"""gRPC's wire over HTTP/2, the parts both ends share: frames, settings, status codes, special headers.

Imported by the daemon's server (cri/h2server.py) and by the CLI's unary client (cli/h2unary.py), so it
stays free of grpc and protobuf: the CLI's start-up time and the daemon's memory both depend on that.
The facts here are RFC 9113 (HTTP/2), RFC 7541 (HPACK) and gRPC's "PROTOCOL-HTTP2" document.
"""

from __future__ import annotations

import enum
import struct
import urllib.parse

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10))
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
(SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS,
 SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE) = range(1, 7)
# Error codes of RST_STREAM and GOAWAY.
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x6, 0x7, 0x8, 0x9
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME = 16384


class StatusCode(enum.IntEnum):
    """gRPC status codes, with grpc.StatusCode's names, so that a daemon that serves without grpcio
    still speaks of them the way clients, logs and metrics do."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


CODES = tuple(code.name for code in StatusCode)

_FRAME_HEAD = struct.Struct(">BHBBI")  # a 24-bit length as 8 + 16 bits, type, flags, stream id


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: its 9-byte header, then the payload."""
    n = len(payload)
    return _FRAME_HEAD.pack(n >> 16, n & 0xFFFF, kind, flags, stream) + payload


def message(data: bytes) -> bytes:
    """One gRPC message on the wire: not compressed, its big-endian length, its bytes."""
    return b"\0" + len(data).to_bytes(4, "big") + data


def grpc_timeout(seconds: float) -> str:
    """The grpc-timeout header: at most 8 digits, in milliseconds (or seconds when that is too many)."""
    millis = max(1, int(seconds * 1000))
    return f"{millis}m" if millis < 10**8 else f"{max(1, int(seconds))}S"


_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_grpc_timeout(value: str) -> float | None:
    """Seconds of a grpc-timeout header (1-8 digits and a unit); None when it is not one."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal_header(name: bytes, value: bytes) -> bytes:
    """A header field as an HPACK "literal without indexing, new name", no Huffman coding.

    Every decoder accepts it and it touches neither side's dynamic table, so a server can build its
    header blocks once and send the same bytes on every connection.
    """
    return (b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value)


# Kept in grpc-message as they are (gRPC: printable ASCII except "%"); anything else is percent-encoded.
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x25)


def encode_grpc_message(text: str) -> bytes:
    """grpc-message's value: UTF-8, then percent-encoding of what is not printable ASCII."""
    return urllib.parse.quote(text, safe=_MESSAGE_SAFE).encode("ascii")


def decode_grpc_message(value: str) -> str:
    return urllib.parse.unquote(value)


__all__ = ["CODES", "DATA", "DEFAULT_FRAME", "DEFAULT_WINDOW", "MAX_WINDOW", "PREFACE", "StatusCode",
           "decode_grpc_message", "encode_grpc_message", "frame", "grpc_timeout", "literal_header", "message",
           "parse_grpc_timeout"]
