"""Unary gRPC calls over HTTP/2 on a unix socket, without grpc: what makes `crib ps -q` start quickly.

Design note. grpc's C extension costs more CPU to import than everything else `crib ps -q` does (see
bench/README.md, `cli`), and a CLI command makes one or a few unary calls one after another. So unary
calls speak the protocol directly: HTTP/2 with prior knowledge (RFC 9113) on the runtime's socket, one
stream per call on one connection, headers through hpack (RFC 7541, the `hpack` package), and gRPC's
framing on top (a 5-byte prefix per message; status and message in the trailers). Server-streaming calls
(events, crib's pull progress) still use grpc, imported only by the commands that make them.

What is spoken: the client preface and SETTINGS (no push, a large stream window) plus one connection
WINDOW_UPDATE, so the server never waits for window updates while it answers; SETTINGS, PING and GOAWAY
from the server; HEADERS with CONTINUATION, padding and priority; RST_STREAM. A request larger than the
server's initial window (64 KiB by default) or frame size is split into frames and waits for window
updates as the protocol requires. Everything is bounded by the call's deadline (grpc-timeout is sent too).
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from crib.cri.h2 import (
    ACK,
    CODES,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    WINDOW_UPDATE,
    decode_grpc_message,
    frame,
    grpc_timeout,
    message,
)

MAX_RESPONSE = 64 * 1024 * 1024


class CallError(Exception):
    """A call that ended without an answer: the gRPC code name and the server's (or our) message."""

    def __init__(self, code: str, message: str, *, unprocessed: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.unprocessed = unprocessed  # the server said it did not start the call (GOAWAY): safe to retry


def unframe(body: bytes) -> bytes:
    """The one message of a unary response body (5-byte prefix: compressed flag, big-endian length).

    Raises:
        CallError: no message, a compressed one (never asked for), or trailing bytes.
    """
    if len(body) < 5:
        raise CallError("INTERNAL", "the runtime answered without a message")
    if body[0] != 0:
        raise CallError("INTERNAL", "the runtime sent a compressed message, which was not asked for")
    (length,) = struct.unpack(">I", body[1:5])
    if len(body) != 5 + length:
        raise CallError("INTERNAL", f"the runtime's message is {len(body) - 5} bytes, its prefix says "
                                    f"{length}")
    return body[5:]


class Connection:
    """One HTTP/2 connection to a unix socket; call() makes one unary gRPC call on a new stream."""

    def __init__(self, path: str, authority: str = "localhost") -> None:
        import hpack

        self.path = path
        self.authority = authority
        self.sock: socket.socket | None = None
        self.hpack = hpack
        self._deadline = 0.0
        self.close()

    def close(self) -> None:
        """Drop the connection; the next call opens a new one (new header tables, stream ids from 1)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.encoder = self.hpack.Encoder()
        self.decoder = self.hpack.Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.next_stream = 1
        self.send_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_FRAME
        self._buf = b""

    # ----------------------------------------------------------------------------------------- wire

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._left())
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        settings = struct.pack(">HI", SETTINGS_ENABLE_PUSH, 0) + struct.pack(
            ">HI", SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW)
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings)
                     + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW)))
        return sock

    def _left(self) -> float | None:
        if not self._deadline:
            return None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def _read(self, n: int) -> bytes:
        assert self.sock is not None
        while len(self._buf) < n:
            self.sock.settimeout(self._left())
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise CallError("UNAVAILABLE", "the runtime closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _frame(self) -> tuple[int, int, int, bytes]:
        head = self._read(9)
        length = int.from_bytes(head[:3], "big")
        stream = struct.unpack(">I", head[5:9])[0] & 0x7FFFFFFF
        return head[3], head[4], stream, self._read(length)

    def _send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.settimeout(self._left())
        self.sock.sendall(data)

    # --------------------------------------------------------------------------- connection frames

    def _control(self, kind: int, flags: int, payload: bytes) -> None:
        """SETTINGS, PING, GOAWAY and connection WINDOW_UPDATE, whatever stream a call is on."""
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[i:i + 6])
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    self.peer_initial_window = value
                elif key == SETTINGS_MAX_FRAME_SIZE:
                    self.peer_max_frame = value
            self._send(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self._send(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            last = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            current = self.next_stream - 2
            self.close()
            reason = payload[8:].decode(errors="replace")
            raise CallError("UNAVAILABLE", f"the runtime is going away: {reason}", unprocessed=last < current)
        elif kind == WINDOW_UPDATE:
            self.send_window += struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF

    def _send_body(self, stream: int, body: bytes) -> None:
        """DATA frames within the peer's frame size and windows, the last one ending the stream."""
        stream_window = self.peer_initial_window
        pos = 0
        while True:
            n = min(len(body) - pos, self.peer_max_frame, self.send_window, stream_window)
            if n <= 0 and pos < len(body):  # wait for window
                kind, flags, sid, payload = self._frame()
                if sid == 0:
                    self._control(kind, flags, payload)
                elif sid == stream and kind == WINDOW_UPDATE:
                    stream_window += struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
                elif sid == stream and kind == RST_STREAM:
                    raise CallError("UNAVAILABLE", f"the runtime reset the call (code {payload[:4].hex()})")
                continue
            last = pos + n >= len(body)
            self._send(frame(DATA, END_STREAM if last else 0, stream, body[pos:pos + n]))
            self.send_window -= n
            stream_window -= n
            pos += n
            if last:
                return

    # --------------------------------------------------------------------------------------- calls

    def call(self, path: str, request: bytes, timeout: float | None) -> bytes:
        """One unary call; the response message's bytes. A call the server turned away unstarted on a
        connection it is closing (GOAWAY: an idle connection of a long `crib top`) is made again on a new one.

        Raises:
            CallError: the call failed (the server's gRPC status, or what went wrong on the way).
            OSError: the socket could not be reached.
        """
        try:
            return self._call(path, request, timeout)
        except CallError as exc:
            if not exc.unprocessed:
                raise
            return self._call(path, request, timeout)

    def _call(self, path: str, request: bytes, timeout: float | None) -> bytes:
        self._deadline = time.monotonic() + timeout if timeout else 0.0
        try:
            if self.sock is None:
                self.sock = self._connect()
            stream = self.next_stream
            self.next_stream += 2
            headers = [(":method", "POST"), (":scheme", "http"), (":path", path),
                       (":authority", self.authority), ("content-type", "application/grpc"),
                       ("te", "trailers"), ("user-agent", "crib-cli")]
            if timeout:
                headers.append(("grpc-timeout", grpc_timeout(timeout)))
            self._send(frame(HEADERS, END_HEADERS, stream, self.encoder.encode(headers)))
            self._send_body(stream, message(request))
            return self._response(stream)
        except TimeoutError:
            self.close()
            raise CallError("DEADLINE_EXCEEDED", "deadline exceeded") from None

    def _response(self, stream: int) -> bytes:
        body = bytearray()
        fields: dict[str, str] = {}
        block = b""
        ended = False
        while True:
            kind, flags, sid, payload = self._frame()
            if sid == 0:
                self._control(kind, flags, payload)
                continue
            if sid != stream:
                continue
            if kind in (DATA, HEADERS) and flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if kind == HEADERS and flags & PRIORITY_FLAG:
                payload = payload[5:]
            if kind == DATA:
                body += payload
                if len(body) > MAX_RESPONSE:
                    raise CallError("RESOURCE_EXHAUSTED",
                                    f"the runtime's answer is over {MAX_RESPONSE} bytes")
            elif kind in (HEADERS, CONTINUATION):
                block += payload
                ended = ended or bool(kind == HEADERS and flags & END_STREAM)
                if flags & END_HEADERS:
                    fields.update((str(k), str(v)) for k, v in self._decode(block))
                    block = b""
            elif kind == RST_STREAM:
                raise CallError("UNAVAILABLE", f"the runtime reset the call (code {payload[:4].hex()})")
            if (kind == DATA and flags & END_STREAM) or (ended and not block):
                return self._result(fields, bytes(body))

    def _decode(self, block: bytes) -> Any:
        import hpack

        try:
            return self.decoder.decode(block, raw=False)
        except hpack.HPACKError as exc:
            raise CallError("INTERNAL", f"unreadable headers from the runtime: {exc}") from None

    def _result(self, fields: dict[str, str], body: bytes) -> bytes:
        status = fields.get(":status", "")
        if status != "200":
            raise CallError("UNAVAILABLE" if status in ("502", "503", "504") else "UNKNOWN",
                            f"the runtime answered HTTP {status or '(no status)'}")
        code = int(fields.get("grpc-status", "2") or 2)
        if code != 0:
            name = CODES[code] if 0 <= code < len(CODES) else "UNKNOWN"
            raise CallError(name, decode_grpc_message(fields.get("grpc-message", "")))
        return unframe(body)


__all__ = ["CODES", "CallError", "Connection", "frame", "grpc_timeout", "unframe"]
