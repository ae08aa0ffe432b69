"""SPDY/3.1 framing as Kubernetes streaming speaks it: pure bytes in, frames out, and back.

kubelet, kubectl, crictl and critest reach a runtime's streaming server through moby/spdystream (SPDY/3
framing, version field 3). Nothing here touches a socket; spdyconn.py runs a connection on top.

Frame layouts (big-endian; the first bit tells control frames from data frames):

    control  |1| version(15) = 3 | type(16) |  flags(8) | length(24) | payload
    data     |0| stream id(31)              |  flags(8) | length(24) | payload

    SYN_STREAM (1)     stream id(31), associated-to id(31), priority(3) unused(5) slot(8), header block
    SYN_REPLY (2)      stream id(31), header block
    RST_STREAM (3)     stream id(31), status(32)
    SETTINGS (4)       count(32), count x [flags(8) id(24), value(32)]
    PING (6)           id(32)
    GOAWAY (7)         last good stream id(31), status(32)
    HEADERS (8)        stream id(31), header block
    WINDOW_UPDATE (9)  stream id(31) (0 = the whole session, SPDY/3.1), delta(31)

A header block is count(32), then count x [length(32) name, length(32) value]; names are lower case and a
value may carry several values separated by NUL. Every header block of a connection, in one direction, goes
through one zlib stream primed with the SPDY/3 dictionary and ends with a sync flush, so the two ends'
(de)compressors must see every block in order, even of frames they then ignore.

What constrains the choices: spdystream cannot parse control frame types other than the eight above (its
reader fails and drops the connection), so an encoder here only ever emits those; it ignores SETTINGS and
WINDOW_UPDATE and never sends either (flow control is spdyconn.py's concern). A decoder here ignores
unknown control types as the spec asks, but keeps the header decompressor in step.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

# RST_STREAM status codes.
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9
FRAME_TOO_LARGE = 11

# GOAWAY status codes.
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

# SETTINGS ids.
SETTINGS_MAX_CONCURRENT_STREAMS = 4
SETTINGS_INITIAL_WINDOW_SIZE = 7

DEFAULT_WINDOW = 64 * 1024  # initial stream and session window of SPDY/3.1
MAX_WINDOW = 0x7FFFFFFF
MAX_FRAME_LENGTH = 0xFFFFFF
MAX_HEADER_BLOCK = 256 * 1024  # decompressed; far above anything Kubernetes sends, a bound against bombs

_ID = struct.Struct(">I")
_TWO = struct.Struct(">II")
_HEAD = struct.Struct(">IBBH")  # first word, flags, length as 8 + 16 bits

# The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 section 2.6.10.1): 65
# length-prefixed words, then a run of status lines, dates, types and encodings. 1423 bytes.
_DICT_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location",
    "content-md5", "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host",
    "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified",
    "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
    "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via",
    "warning", "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url",
    "public", "set-cookie", "keep-alive", "origin",
)
_DICT_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(_ID.pack(len(w)) + w.encode() for w in _DICT_WORDS) + _DICT_TAIL.encode()

Headers = dict[str, str]


class ProtocolError(Exception):
    """The peer broke SPDY framing; the connection cannot continue (GOAWAY PROTOCOL_ERROR)."""


# ------------------------------------------------------------------------------------------------ frames


class _Fin:
    """The FIN flag of the frames that carry one (DATA, SYN_STREAM, SYN_REPLY, HEADERS)."""

    __slots__ = ()
    flags: int

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True, slots=True)
class DataFrame(_Fin):
    stream_id: int
    flags: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SynStream(_Fin):
    stream_id: int
    headers: Headers
    flags: int = 0
    associated_id: int = 0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class SynReply(_Fin):
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True, slots=True)
class HeadersFrame(_Fin):
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True, slots=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Settings:
    values: dict[int, int] = field(default_factory=dict)
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Ping:
    id: int


@dataclass(frozen=True, slots=True)
class GoAway:
    last_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    stream_id: int
    delta: int


Frame = DataFrame | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate


# --------------------------------------------------------------------------------------- header blocks


def pack_headers(headers: Headers) -> bytes:
    """The uncompressed header block of headers (names lower-cased, as SPDY/3 requires)."""
    parts = [_ID.pack(len(headers))]
    for name, value in headers.items():
        raw_name, raw_value = name.lower().encode(), value.encode()
        parts += [_ID.pack(len(raw_name)), raw_name, _ID.pack(len(raw_value)), raw_value]
    return b"".join(parts)


def unpack_headers(block: bytes) -> Headers:
    """Parse an uncompressed header block; several values of one name are joined with NUL.

    Raises:
        ProtocolError: the block is truncated or has bytes left over.
    """
    try:
        (count,) = _ID.unpack_from(block, 0)
        pos = 4
        out: Headers = {}
        for _ in range(count):
            (n,) = _ID.unpack_from(block, pos)
            name = block[pos + 4:pos + 4 + n].decode("latin-1").lower()
            pos += 4 + n
            (v,) = _ID.unpack_from(block, pos)
            value = block[pos + 4:pos + 4 + v].decode("latin-1")
            pos += 4 + v
            if pos > len(block):
                raise ProtocolError("a header block ends inside a name or value")
            out[name] = f"{out[name]}\0{value}" if name in out else value
    except struct.error as exc:
        raise ProtocolError(f"truncated header block: {exc}") from None
    if pos != len(block):
        raise ProtocolError(f"{len(block) - pos} stray bytes after a header block")
    return out


# --------------------------------------------------------------------------------------------- encoding


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_LENGTH:
        raise ValueError(f"control frame payload of {len(payload)} bytes is too large")
    return _TWO.pack(0x80000000 | (VERSION << 16) | kind, (flags << 24) | len(payload)) + payload


def data_header(stream_id: int, length: int, *, fin: bool = False) -> bytes:
    """The 8-byte header of a data frame; the payload follows it on the wire (no copy needed here)."""
    if not 0 <= length <= MAX_FRAME_LENGTH:
        raise ValueError(f"a data frame carries at most {MAX_FRAME_LENGTH} bytes, not {length}")
    return _TWO.pack(stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | length)


class Encoder:
    """Serializes frames of one connection direction; owns that direction's header compressor."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                                         zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def _block(self, headers: Headers) -> bytes:
        return self._deflate.compress(pack_headers(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_stream(self, stream_id: int, headers: Headers, *, fin: bool = False, priority: int = 0,
                   associated_id: int = 0) -> bytes:
        payload = _TWO.pack(stream_id, associated_id) + bytes([(priority & 7) << 5, 0]) + self._block(headers)
        return _control(SYN_STREAM, FLAG_FIN if fin else 0, payload)

    def syn_reply(self, stream_id: int, headers: Headers | None = None, *, fin: bool = False) -> bytes:
        return _control(SYN_REPLY, FLAG_FIN if fin else 0, _ID.pack(stream_id) + self._block(headers or {}))

    def headers(self, stream_id: int, headers: Headers, *, fin: bool = False) -> bytes:
        return _control(HEADERS, FLAG_FIN if fin else 0, _ID.pack(stream_id) + self._block(headers))

    @staticmethod
    def rst_stream(stream_id: int, status: int) -> bytes:
        return _control(RST_STREAM, 0, _TWO.pack(stream_id, status))

    @staticmethod
    def settings(values: dict[int, int], *, flags: int = 0) -> bytes:
        body = _ID.pack(len(values)) + b"".join(_TWO.pack(key & 0xFFFFFF, value)
                                                for key, value in values.items())
        return _control(SETTINGS, flags, body)

    @staticmethod
    def ping(ping_id: int) -> bytes:
        return _control(PING, 0, _ID.pack(ping_id))

    @staticmethod
    def goaway(last_stream_id: int, status: int = GOAWAY_OK) -> bytes:
        return _control(GOAWAY, 0, _TWO.pack(last_stream_id, status))

    @staticmethod
    def window_update(stream_id: int, delta: int) -> bytes:
        return _control(WINDOW_UPDATE, 0, _TWO.pack(stream_id, delta))

    @staticmethod
    def data(stream_id: int, data: bytes, *, fin: bool = False) -> bytes:
        return data_header(stream_id, len(data), fin=fin) + data


# --------------------------------------------------------------------------------------------- decoding


class Decoder:
    """Turns the bytes of one connection direction into frames, in order; owns the header decompressor.

    feed() may be given any split of the byte stream; a frame is returned once it is complete. A data
    frame's payload is a copy the caller may keep.
    """

    def __init__(self, *, max_frame: int = MAX_FRAME_LENGTH) -> None:
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(15, DICTIONARY)
        self._max_frame = max_frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes from the peer; return every frame now complete.

        Raises:
            ProtocolError: a malformed frame; nothing after it can be trusted.
        """
        # Parse straight from the new bytes when nothing is pending (the common case for bulk data): each
        # payload is then copied once, and only an incomplete tail is kept.
        if self._buf:
            self._buf += data
            source: bytes | bytearray = self._buf
        else:
            source = data
        frames: list[Frame] = []
        pos, end = 0, len(source)
        with memoryview(source) as view:
            while end - pos >= 8:
                word, flags, hi, lo = _HEAD.unpack_from(view, pos)
                length = (hi << 16) | lo
                if length > self._max_frame:
                    raise ProtocolError(f"a frame of {length} bytes exceeds the limit of {self._max_frame}")
                if end - pos - 8 < length:
                    break
                start = pos + 8
                pos = start + length
                if word & 0x80000000:
                    frame = self._control(word, flags, bytes(view[start:pos]))
                    if frame is not None:
                        frames.append(frame)
                else:
                    stream_id = word & 0x7FFFFFFF
                    if stream_id == 0:
                        raise ProtocolError("a data frame on stream 0")
                    frames.append(DataFrame(stream_id, flags, bytes(view[start:pos])))
        if source is self._buf:
            del self._buf[:pos]
        elif pos < end:
            self._buf = bytearray(data[pos:])
        return frames

    def _block(self, raw: bytes) -> Headers:
        try:
            block = self._inflate.decompress(raw, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise ProtocolError(f"header block does not decompress: {exc}") from None
        if self._inflate.unconsumed_tail:
            raise ProtocolError(f"a header block decompresses to more than {MAX_HEADER_BLOCK} bytes")
        return unpack_headers(block)

    def _control(self, word: int, flags: int, payload: bytes) -> Frame | None:
        version, kind = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} is not supported (only {VERSION})")
        size = len(payload)
        try:
            if kind == SYN_STREAM:
                stream_id, assoc = _TWO.unpack_from(payload, 0)
                priority = payload[8] >> 5
                headers = self._block(payload[10:])
                _nonzero(stream_id & 0x7FFFFFFF, "SYN_STREAM")
                return SynStream(stream_id & 0x7FFFFFFF, headers, flags, assoc & 0x7FFFFFFF, priority)
            if kind in (SYN_REPLY, HEADERS):
                (stream_id,) = _ID.unpack_from(payload, 0)
                headers = self._block(payload[4:])
                _nonzero(stream_id & 0x7FFFFFFF, "SYN_REPLY/HEADERS")
                cls = SynReply if kind == SYN_REPLY else HeadersFrame
                return cls(stream_id & 0x7FFFFFFF, headers, flags)
            if kind == RST_STREAM:
                _size(size, 8, "RST_STREAM")
                stream_id, status = _TWO.unpack_from(payload, 0)
                return RstStream(stream_id & 0x7FFFFFFF, status)
            if kind == SETTINGS:
                (count,) = _ID.unpack_from(payload, 0)
                _size(size, 4 + 8 * count, "SETTINGS")
                values = {}
                for i in range(count):
                    key, value = _TWO.unpack_from(payload, 4 + 8 * i)
                    values[key & 0xFFFFFF] = value
                return Settings(values, flags)
            if kind == PING:
                _size(size, 4, "PING")
                return Ping(_ID.unpack_from(payload, 0)[0])
            if kind == GOAWAY:
                # SPDY/3 GOAWAY has a status; some SPDY/2-era peers send only the stream id.
                if size not in (4, 8):
                    raise ProtocolError(f"GOAWAY of {size} bytes")
                (last,) = _ID.unpack_from(payload, 0)
                status = _ID.unpack_from(payload, 4)[0] if size == 8 else GOAWAY_OK
                return GoAway(last & 0x7FFFFFFF, status)
            if kind == WINDOW_UPDATE:
                _size(size, 8, "WINDOW_UPDATE")
                stream_id, delta = _TWO.unpack_from(payload, 0)
                return WindowUpdate(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error as exc:
            raise ProtocolError(f"truncated control frame of type {kind}: {exc}") from None
        return None  # unknown control frame types are ignored (NOOP, CREDENTIAL, ...)


def _size(got: int, want: int, what: str) -> None:
    if got != want:
        raise ProtocolError(f"{what} frame of {got} bytes, expected {want}")


def _nonzero(stream_id: int, what: str) -> None:
    if stream_id == 0:
        raise ProtocolError(f"{what} on stream 0")


__all__ = [
    "CANCEL", "DEFAULT_WINDOW", "DICTIONARY", "FLAG_FIN", "FLOW_CONTROL_ERROR", "GOAWAY_INTERNAL_ERROR",
    "GOAWAY_OK", "GOAWAY_PROTOCOL_ERROR", "INTERNAL_ERROR", "INVALID_STREAM", "MAX_WINDOW", "PROTOCOL_ERROR",
    "REFUSED_STREAM", "SETTINGS_INITIAL_WINDOW_SIZE", "SETTINGS_MAX_CONCURRENT_STREAMS",
    "STREAM_ALREADY_CLOSED", "STREAM_IN_USE", "DataFrame", "Decoder", "Encoder", "Frame", "GoAway", "Headers",
    "HeadersFrame", "Ping", "ProtocolError", "RstStream", "Settings", "SynReply", "SynStream",
    "WindowUpdate", "data_header", "pack_headers", "unpack_headers",
]
