"""The client side of the HTTP/1.1 upgrade: connect to a streaming URL and hand the socket to SPDY or
WebSocket. Used by client.py only."""

from __future__ import annotations

import asyncio
import base64
import os
import urllib.parse
from typing import Any

import h11

from crib.streaming import websocket as ws
from crib.streaming._transport import ConnectionClosed, switch

MAX_HEAD = 64 * 1024


class UpgradeError(ConnectionError):
    """The server did not switch protocols; status and body say why (404: unknown, used or expired URL)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"streaming server answered {status}: {body.strip() or '(no body)'}")
        self.status = status
        self.body = body


class _Upgrader(asyncio.Protocol):
    def __init__(self, request: h11.Request) -> None:
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[tuple[list[tuple[bytes, bytes]], bytes]] = \
            asyncio.get_running_loop().create_future()
        self._response: h11.Response | None = None
        self._body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.h11.send(self.request) + (self.h11.send(h11.EndOfMessage()) or b""))

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        try:
            while not self.done.done():
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    assert self.transport is not None
                    self.transport.pause_reading()
                    self.done.set_result((list(event.headers), self.h11.trailing_data[0]))
                elif isinstance(event, h11.Response):
                    self._response = event
                elif isinstance(event, h11.Data):
                    self._body += event.data[: 4096 - len(self._body)]
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    status = self._response.status_code if self._response else 0
                    self.done.set_exception(UpgradeError(status, self._body.decode(errors="replace")))
        except h11.ProtocolError as exc:
            self.done.set_exception(ConnectionClosed(f"bad answer from the streaming server: {exc}"))

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        self.data_received(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionClosed(f"the streaming server closed the connection: {exc}"))


def header(headers: list[tuple[bytes, bytes]], name: str) -> str:
    for key, value in headers:
        if key.decode("latin-1").lower() == name:
            return value.decode("latin-1")
    return ""


async def upgrade(url: str, *, websocket: bool, protocols: list[str], ssl_context: Any = None,
                  timeout: float = 30.0,
                  server_name: str | None = None) -> tuple[asyncio.Transport, str, bytes]:
    """Connect to url and upgrade; returns the transport (reading paused), the protocol the server chose
    ("" if none) and the bytes that came after its answer. server_name: the name TLS sends (SNI) and checks
    the server's certificate against, instead of the URL's host (crictl's --tls-sni).

    Raises:
        UpgradeError: the server answered with anything but 101.
        OSError, TimeoutError: no connection.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: a streaming URL starts with http:// or https://")
    secure = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [("Host", parts.netloc), ("User-Agent", "crib"), ("Connection", "Upgrade")]
    key = ""
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        headers += [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", key)]
        if protocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
    else:
        headers += [("Upgrade", "SPDY/3.1")] + [("X-Stream-Protocol-Version", p) for p in protocols]
        headers.append(("Content-Length", "0"))
    request = h11.Request(method="GET" if websocket else "POST", target=target, headers=headers)
    loop = asyncio.get_running_loop()
    context = ssl_context
    if secure and context is None:
        import ssl

        context = ssl.create_default_context()
    async with asyncio.timeout(timeout):
        transport, upgrader = await loop.create_connection(
            lambda: _Upgrader(request), host, port, ssl=context if secure else None,
            server_hostname=(server_name or host) if secure else None)
        try:
            answer, leftover = await upgrader.done
        except BaseException:
            transport.close()
            raise
    if websocket:
        if header(answer, "sec-websocket-accept") != ws.accept_key(key):
            transport.close()
            raise ConnectionClosed("the server's Sec-WebSocket-Accept does not match our key")
        chosen = header(answer, "sec-websocket-protocol")
    else:
        chosen = header(answer, "x-stream-protocol-version")
    return transport, chosen, leftover


__all__ = ["UpgradeError", "switch", "upgrade"]
