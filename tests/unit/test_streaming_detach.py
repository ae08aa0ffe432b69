"""The streaming client's pure pieces for the CLI: detach keys (crictl's and docker's ctrl-p ctrl-q) and
the TLS context of crictl's --tls-* flags."""

from __future__ import annotations

import ssl

import pytest

from crib.streaming.client import DetachScanner, parse_detach_keys, tls_context

CTRL_P, CTRL_Q = b"\x10", b"\x11"


def feed_all(scanner: DetachScanner, chunks: list[bytes]) -> tuple[bytes, bool]:
    out = b""
    for chunk in chunks:
        sent, hit = scanner.feed(chunk)
        out += sent
        if hit:
            return out, True
    return out, False


@pytest.mark.parametrize(("chunks", "sent", "hit"), [
    ([b"ls\r"], b"ls\r", False),
    ([b"ab" + CTRL_P + CTRL_Q + b"after"], b"ab", True),  # what follows the sequence is dropped
    ([b"ab" + CTRL_P, CTRL_Q], b"ab", True),  # split across reads
    ([CTRL_P + b"x"], CTRL_P + b"x", False),  # a near miss goes through unchanged
    ([CTRL_P, b"x"], CTRL_P + b"x", False),
    ([CTRL_P + CTRL_P + CTRL_Q], CTRL_P, True),  # the first ctrl-p was a key, the second begins the sequence
    ([CTRL_Q + CTRL_P], CTRL_Q, False),  # a trailing ctrl-p is held until the next key decides
])
def test_scanner(chunks: list[bytes], sent: bytes, hit: bool) -> None:
    assert feed_all(DetachScanner(CTRL_P + CTRL_Q), chunks) == (sent, hit)


def test_scanner_with_a_repeated_prefix() -> None:
    # Sequence p p q; typed p p p q: the first p is a key, the last three the sequence.
    scanner = DetachScanner(b"ppq")
    assert feed_all(scanner, [b"p", b"p", b"p", b"q"]) == (b"p", True)
    assert DetachScanner(b"ppq").feed(b"ppxq") == (b"ppxq", False)


@pytest.mark.parametrize(("spec", "keys"), [
    ("ctrl-p,ctrl-q", CTRL_P + CTRL_Q),
    ("ctrl-@", b"\x00"), ("ctrl-[,q", b"\x1bq"), ("ctrl-_", b"\x1f"), ("CTRL-A, x", b"\x01x"), ("", b""),
])
def test_parse_detach_keys(spec: str, keys: bytes) -> None:
    assert parse_detach_keys(spec) == keys


@pytest.mark.parametrize("spec", ["ctrl-1", "alt-p", "ctrl-pp"])
def test_parse_detach_keys_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match="key"):
        parse_detach_keys(spec)


def test_tls_context_as_crictl() -> None:
    insecure = tls_context()  # no flags: crictl's Insecure
    assert (insecure.verify_mode, insecure.check_hostname) == (ssl.CERT_NONE, False)
    verifying = tls_context(ca="")  # still nothing given
    assert verifying.verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        tls_context(cert="client.crt")
    with pytest.raises(FileNotFoundError):
        tls_context(ca="/nonexistent/ca.crt")
