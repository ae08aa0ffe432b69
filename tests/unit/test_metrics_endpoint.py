"""The scrape endpoint's HTTP: /metrics only, GET and HEAD, keep-alive, gzip, TLS with client certificates."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crib.errors import ConfigError
from crib.metrics.endpoint import Endpoint, tls_context

BODY = b"# HELP x A test.\n# TYPE x gauge\nx 1.0\n" * 100


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    calls = 0

    async def render() -> bytes:
        nonlocal calls
        calls += 1
        return BODY

    ep = Endpoint("127.0.0.1:0", render, "text/plain; version=0.0.4")
    await ep.start()
    yield ep
    await ep.stop()


def _requests(
    port: int, *requests: tuple[str, str, dict[str, str]]
) -> list[tuple[int, dict[str, str], bytes]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for method, path, headers in requests:
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            out.append((resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()))
    finally:
        conn.close()
    return out


async def test_metrics_are_served_and_the_connection_kept(endpoint: Endpoint) -> None:
    (get, head, again) = await asyncio.to_thread(
        _requests,
        endpoint.port,
        ("GET", "/metrics", {}),
        ("HEAD", "/metrics", {}),
        ("GET", "/metrics?x=1", {"Accept-Encoding": "gzip"}),
    )
    assert get[0] == 200
    assert get[2] == BODY
    assert get[1]["content-type"].startswith("text/plain; version=0.0.4")
    assert head[0] == 200
    assert head[2] == b""
    assert head[1]["content-length"] == str(len(BODY))
    assert again[1]["content-encoding"] == "gzip"
    assert gzip.decompress(again[2]) == BODY


async def test_other_paths_and_methods_are_refused(endpoint: Endpoint) -> None:
    (missing, post) = await asyncio.to_thread(
        _requests, endpoint.port, ("GET", "/", {}), ("DELETE", "/metrics", {})
    )
    assert missing[0] == 404
    assert b"/metrics" in missing[2]
    assert post[0] == 405
    assert post[1]["allow"] == "GET, HEAD"


async def test_a_failing_render_is_a_500_and_the_server_goes_on() -> None:
    async def render() -> bytes:
        raise RuntimeError("boom")

    ep = Endpoint("127.0.0.1:0", render, "text/plain")
    await ep.start()
    try:
        ((status, _, body),) = await asyncio.to_thread(_requests, ep.port, ("GET", "/metrics", {}))
        assert status == 500
        assert b"boom" in body
        ((status, _, _),) = await asyncio.to_thread(_requests, ep.port, ("GET", "/nothing", {}))
        assert status == 404
    finally:
        await ep.stop()


def _cert(tmp: Path, name: str, ca: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    key, crt = tmp / f"{name}.key", tmp / f"{name}.crt"
    subj = ["-subj", f"/CN={name}"]
    if ca is None:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(crt),
                "-days",
                "1",
                *subj,
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    else:
        csr = tmp / f"{name}.csr"
        subprocess.run(
            ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), *subj],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(ca[1]),
                "-CAkey",
                str(ca[0]),
                "-CAcreateserial",
                "-out",
                str(crt),
                "-days",
                "1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return key, crt


async def test_tls_with_client_certificates(tmp_path: Path) -> None:
    ca_key, ca_crt = _cert(tmp_path, "ca")
    server_key, server_crt = _cert(tmp_path, "server")
    client_key, client_crt = _cert(tmp_path, "client", ca=(ca_key, ca_crt))

    async def render() -> bytes:
        return BODY

    ep = Endpoint(
        "127.0.0.1:0", render, "text/plain", tls_context(str(server_crt), str(server_key), str(ca_crt))
    )
    await ep.start()

    def get(with_client_cert: bool) -> int:
        ctx = ssl.create_default_context(cafile=str(server_crt))
        if with_client_cert:
            ctx.load_cert_chain(str(client_crt), str(client_key))
        conn = http.client.HTTPSConnection("127.0.0.1", ep.port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().status
        finally:
            conn.close()

    try:
        assert await asyncio.to_thread(get, True) == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.to_thread(get, False)
    finally:
        await ep.stop()


@pytest.mark.parametrize(
    ("cert", "key", "ca", "message"),
    [
        ("a.crt", "", "", "set together"),
        ("", "", "ca.crt", "client certificates need"),
        ("/nonexistent.crt", "/nonexistent.key", "", "metrics TLS files"),
    ],
    ids=["cert-without-key", "ca-alone", "missing-files"],
)
def test_bad_tls_settings_say_what_to_change(cert: str, key: str, ca: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tls_context(cert, key, ca)


def test_a_bad_address_is_a_config_error() -> None:
    async def render() -> bytes:
        return b""

    with pytest.raises(ConfigError, match="host:port"):
        Endpoint("localhost", render, "text/plain")
