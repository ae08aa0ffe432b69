"""The Prometheus scrape endpoint: GET /metrics over HTTP/1.1 (optionally TLS) on the event loop.

A few dozen lines of HTTP rather than prometheus-client's threaded WSGI server: the scrape gathers the
records on the event loop (no lock shared with a foreign thread), reads the node and formats the text in a
worker thread, and TLS comes from the same ssl module settings as everything else. The server speaks just
what Prometheus needs: GET or HEAD of /metrics (anything else is a 404 or 405), keep-alive, gzip when
asked for, a bounded request head, an idle timeout, and one scrape rendered at a time.

Address forms: "127.0.0.1:9090", "[::1]:9090", ":9090" (all interfaces), port 0 = any free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import Awaitable, Callable

from crib import log
from crib.config import split_address
from crib.errors import ConfigError

_log = log.get(__name__)

HEAD_LIMIT = 16 * 1024
IDLE_TIMEOUT = 60.0
GZIP_MIN = 1024


def tls_context(cert: str, key: str, ca: str) -> ssl.SSLContext | None:
    """A server context from PEM files (None when no cert is configured); ca turns on client certificates."""
    if not cert and not key:
        if ca:
            raise ConfigError("metrics.tls_ca is set but metrics.tls_cert and metrics.tls_key are not; "
                              "client certificates need the server's own certificate too")
        return None
    if not cert or not key:
        raise ConfigError("metrics.tls_cert and metrics.tls_key must be set together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(cafile=ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"metrics TLS files (tls_cert {cert}, tls_key {key}, tls_ca {ca or '-'}): "
                          f"{exc}") from exc
    return ctx


def _response(status: str, body: bytes, content_type: str, *, head: bool = False, close: bool = False,
              extra: tuple[str, ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}", *extra]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


class Endpoint:
    """Serves render() at /metrics (see the module note)."""

    def __init__(self, address: str, render: Callable[[], Awaitable[bytes]], content_type: str,
                 tls: ssl.SSLContext | None = None) -> None:
        try:
            self._host, self._port = split_address(address)
        except ValueError as exc:
            raise ConfigError(f"metrics.address: {exc}") from exc
        self._render = render
        self._content_type = content_type
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._lock = asyncio.Lock()
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port, ssl=self._tls,
                                                      limit=HEAD_LIMIT, reuse_address=True)
        except OSError as exc:
            raise ConfigError(f"metrics endpoint: cannot listen on {self._host or '*'}:{self._port}: "
                              f"{exc.strerror}; choose another [metrics] address") from exc
        log.event(_log, 20, "metrics endpoint serving", address=f"{self._host or '*'}:{self.port}",
                  tls=self._tls is not None)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError,
                ssl.SSLError, ValueError):
            pass  # a client that goes away or talks nonsense just loses its connection
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection stays open for another."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False  # closed between requests
        lines = head.decode("latin-1").split("\r\n")
        method, path, version = [*lines[0].split(" "), "", "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "content-length" in headers or "transfer-encoding" in headers:
            keep = False  # GET has no body; rather than read one, close after answering
        text = "text/plain; charset=utf-8"
        if path.split("?", 1)[0] != "/metrics":
            writer.write(_response("404 Not Found", b"crib serves its metrics at /metrics\n", text,
                                   head=method == "HEAD", close=not keep))
        elif method not in ("GET", "HEAD"):
            writer.write(_response("405 Method Not Allowed", b"use GET\n", text, close=not keep,
                                   extra=("Allow: GET, HEAD",)))
        else:
            async with self._lock:
                try:
                    body = await self._render()
                except Exception as exc:
                    _log.exception("rendering the metrics failed")
                    body = f"crib could not gather its metrics: {type(exc).__name__}: {exc}\n".encode()
                    writer.write(_response("500 Internal Server Error", body, text, close=True))
                    await writer.drain()
                    return False
            extra: tuple[str, ...] = ()
            if "gzip" in headers.get("accept-encoding", "") and len(body) >= GZIP_MIN:
                body = await asyncio.to_thread(gzip.compress, body, 5)
                extra = ("Content-Encoding: gzip",)
            writer.write(_response("200 OK", body, self._content_type, head=method == "HEAD", close=not keep,
                                   extra=extra))
        await writer.drain()
        return keep


__all__ = ["Endpoint", "tls_context"]
