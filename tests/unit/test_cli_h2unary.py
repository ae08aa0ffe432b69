"""The CLI's HTTP/2 client of unary calls, against a scripted peer (frames in, frames out)."""

from __future__ import annotations

import struct

import hpack
import pytest

from crib.cli import h2unary as h2


class ScriptedSocket:
    """Plays the server's bytes back and records what the client sends."""

    def __init__(self, incoming: bytes) -> None:
        self.incoming = incoming
        self.sent = b""

    def recv(self, n: int) -> bytes:
        chunk, self.incoming = self.incoming[:n], self.incoming[n:]
        return chunk

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def settimeout(self, _: float | None) -> None:
        pass

    def close(self) -> None:
        pass


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    while data:
        length = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], struct.unpack(">I", data[5:9])[0], data[9:9 + length]))
        data = data[9 + length:]
    return out


def connection(incoming: bytes) -> tuple[h2.Connection, ScriptedSocket]:
    conn = h2.Connection("/nowhere.sock")
    sock = ScriptedSocket(incoming)
    conn.sock = sock  # type: ignore[assignment]
    return conn, sock


def grpc_body(message: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(message)) + message


def block(headers: list[tuple[str, str]]) -> bytes:
    """A header block from a fresh encoder (it never refers to entries the client's decoder lacks)."""
    return bytes(hpack.Encoder().encode(headers))


OK_HEADERS = block([(":status", "200"), ("content-type", "application/grpc")])


def test_a_call_sends_headers_and_body_and_reads_the_answer() -> None:
    reply = (h2.frame(h2.HEADERS, h2.END_HEADERS, 1, OK_HEADERS)
             + h2.frame(h2.DATA, 0, 1, grpc_body(b"answer"))
             + h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, block([("grpc-status", "0")])))
    conn, sock = connection(reply)
    assert conn.call("/runtime.v1.RuntimeService/Version", b"question", timeout=5) == b"answer"
    sent = frames(sock.sent)
    kinds = [(k, f, s) for k, f, s, _ in sent]
    assert kinds == [(h2.HEADERS, h2.END_HEADERS, 1), (h2.DATA, h2.END_STREAM, 1)]
    headers = dict(hpack.Decoder().decode(sent[0][3]))
    assert headers[":path"] == "/runtime.v1.RuntimeService/Version"
    assert headers["content-type"] == "application/grpc"
    assert headers["te"] == "trailers"
    assert headers["grpc-timeout"] == "5000m"
    assert sent[1][3] == grpc_body(b"question")
    assert conn.next_stream == 3  # the next call gets the next stream


def test_a_trailers_only_error_is_its_code_and_message() -> None:
    headers = block([(":status", "200"), ("grpc-status", "5"),
                     ("grpc-message", "container%20%22x%22%20not%20found")])
    conn, _ = connection(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, headers))
    with pytest.raises(h2.CallError) as err:
        conn.call("/x/y", b"", timeout=None)
    assert (err.value.code, err.value.message) == ("NOT_FOUND", 'container "x" not found')


def test_settings_ping_padding_and_continuation() -> None:
    trailers = block([("grpc-status", "0"), ("x-long", "v" * 40)])
    padded = bytes([3]) + OK_HEADERS + b"\0\0\0"
    reply = (h2.frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.SETTINGS_MAX_FRAME_SIZE, 32768))
             + h2.frame(h2.PING, 0, 0, b"12345678")
             + h2.frame(h2.HEADERS, h2.END_HEADERS | h2.PADDED, 1, padded)
             + h2.frame(h2.DATA, 0, 1, grpc_body(b"ok"))
             + h2.frame(h2.HEADERS, h2.END_STREAM, 1, trailers[:10])
             + h2.frame(h2.CONTINUATION, h2.END_HEADERS, 1, trailers[10:]))
    conn, sock = connection(reply)
    assert conn.call("/x/y", b"", timeout=None) == b"ok"
    kinds = [(k, f, p) for k, f, s, p in frames(sock.sent) if s == 0]
    assert (h2.SETTINGS, h2.ACK, b"") in kinds
    assert (h2.PING, h2.ACK, b"12345678") in kinds
    assert conn.peer_max_frame == 32768


def test_a_big_request_is_split_to_the_peers_frame_size() -> None:
    reply = (h2.frame(h2.HEADERS, h2.END_HEADERS, 1, OK_HEADERS) + h2.frame(h2.DATA, 0, 1, grpc_body(b""))
             + h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, block([("grpc-status", "0")])))
    conn, sock = connection(reply)
    conn.peer_max_frame = 16
    conn.call("/x/y", b"z" * 40, timeout=None)
    data = [(f, p) for k, f, s, p in frames(sock.sent) if k == h2.DATA]
    assert [len(p) for _, p in data] == [16, 16, 13]
    assert [f for f, _ in data] == [0, 0, h2.END_STREAM]
    assert b"".join(p for _, p in data) == grpc_body(b"z" * 40)


@pytest.mark.parametrize(("reply", "code"), [
    (h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", 1, 0) + b"shutting down"), "UNAVAILABLE"),
    (h2.frame(h2.RST_STREAM, 0, 1, struct.pack(">I", 2)), "UNAVAILABLE"),
    (b"", "UNAVAILABLE"),
    (h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, block([(":status", "404")])), "UNKNOWN"),
], ids=["goaway", "reset", "closed", "http-404"])
def test_failures_on_the_way(reply: bytes, code: str) -> None:
    conn, _ = connection(reply)
    with pytest.raises(h2.CallError) as err:
        conn.call("/x/y", b"", timeout=None)
    assert err.value.code == code


def test_a_call_turned_away_unstarted_is_made_again_on_a_new_connection() -> None:
    answer = (h2.frame(h2.HEADERS, h2.END_HEADERS, 1, OK_HEADERS)
              + h2.frame(h2.DATA, 0, 1, grpc_body(b"again"))
              + h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, block([("grpc-status", "0")])))
    first = ScriptedSocket(h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", 0, 0)))  # last stream 0: not started
    second = ScriptedSocket(answer)
    conn = h2.Connection("/nowhere.sock")
    conn.sock = first  # type: ignore[assignment]
    conn._connect = lambda: second  # type: ignore[method-assign]  # the new connection
    assert conn.call("/x/y", b"", timeout=None) == b"again"
    assert frames(second.sent)[0][2] == 1  # stream ids start again on the new connection


def test_message_framing_and_timeouts() -> None:
    assert h2.unframe(grpc_body(b"abc")) == b"abc"
    with pytest.raises(h2.CallError, match="compressed"):
        h2.unframe(b"\1" + grpc_body(b"abc")[1:])
    with pytest.raises(h2.CallError, match="its prefix says 9"):
        h2.unframe(b"\0" + struct.pack(">I", 9) + b"abc")
    assert h2.grpc_timeout(2.5) == "2500m"
    assert h2.grpc_timeout(10**6) == "1000000S"
