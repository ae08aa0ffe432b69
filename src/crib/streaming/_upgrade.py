"""The HTTP/1.1 side of the streaming server: read a request head, check the URL and the upgrade, answer,
and hand the socket to SPDY or WebSocket. Loaded on the first connection (server.py): a daemon nobody
streams from does not carry h11 or the session code.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import h11

from crib import log
from crib.streaming import handlers, portforward, remotecommand
from crib.streaming import websocket as ws
from crib.streaming._transport import switch as _switch
from crib.streaming.backend import Kind, PortForwardRequest, StreamRequest
from crib.streaming.spdyconn import SpdyConnection
from crib.streaming.wsconn import WebSocketConnection

if TYPE_CHECKING:
    from crib.streaming.server import StreamServer

_log = log.get("crib.streaming.server")

MAX_HEAD = 16 * 1024
# HTTP answers (h11 events), named apart from CRI responses, which only cri/ builds.
_SWITCHING = h11.InformationalResponse
_ANSWER = h11.Response
WS_REMOTE_COMMAND = (ws.V5_CHANNEL, ws.V4_CHANNEL, ws.V4_BASE64_CHANNEL, ws.CHANNEL, ws.BASE64_CHANNEL)
WS_PORT_FORWARD = (ws.SPDY_TUNNEL_PREFIX + portforward.PROTOCOL, ws.V4_CHANNEL, ws.V4_BASE64_CHANNEL)


class _Refused(Exception):
    def __init__(self, status: int, message: str = "", headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


def _values(request: h11.Request, name: bytes) -> list[str]:
    """Every comma-separated value of a header, over all its occurrences, in order."""
    out = []
    for key, value in request.headers:
        if key == name:
            out += [v.strip() for v in value.decode("latin-1").split(",") if v.strip()]
    return out


def _negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    return next((p for p in offered if p in supported), None)


class Upgrader:
    """Routing and protocol negotiation for one server (see server.py's module note)."""

    def __init__(self, server: StreamServer) -> None:
        self.server = server
        self.tokens = server.tokens
        self.backend = server.backend
        self.limits = server.limits

    def handshake(self) -> Handshake:
        return Handshake(self)

    def route(self, request: h11.Request) -> tuple[StreamRequest, dict[str, list[str]]]:
        if request.method not in (b"GET", b"POST"):
            raise _Refused(404)
        target = urllib.parse.urlsplit(request.target.decode("latin-1"))
        parts = target.path.split("/")
        if len(parts) != 3 or parts[0] or parts[1] not in {k.value for k in Kind} or not parts[2]:
            raise _Refused(404)
        stream_request = self.tokens.take(parts[2])
        if stream_request is None or stream_request.kind.value != parts[1]:
            raise _Refused(404)
        return stream_request, urllib.parse.parse_qs(target.query)

    def upgrade(self, request: h11.Request) -> tuple[list[tuple[str, str]], Any]:
        """Check the upgrade, pick the protocol; returns the 101's headers and a starter for the session."""
        stream_request, query = self.route(request)
        upgrade = [v.lower() for v in _values(request, b"upgrade")]
        connection = [v.lower() for v in _values(request, b"connection")]
        if "upgrade" not in connection:
            raise _Refused(400, "unable to upgrade: missing upgrade headers in request")
        if "websocket" in upgrade:
            return self._websocket(request, stream_request, query)
        if "spdy/3.1" in upgrade:
            return self._spdy(request, stream_request)
        raise _Refused(400, "unable to upgrade: the Upgrade header names neither SPDY/3.1 nor websocket")

    def _spdy(self, request: h11.Request, stream_request: StreamRequest) -> tuple[list[tuple[str, str]], Any]:
        offered = _values(request, b"x-stream-protocol-version")
        supported = (portforward.PROTOCOL,) if isinstance(stream_request, PortForwardRequest) \
            else remotecommand.SPDY_PROTOCOLS
        if not offered:
            raise _Refused(400, "unable to upgrade: header X-Stream-Protocol-Version does not exist in "
                           "request")
        protocol = _negotiate(offered, supported)
        if protocol is None:
            raise _Refused(403, f"unable to upgrade: unable to negotiate protocol: client supports "
                           f"{offered}, server accepts {list(supported)}",
                           [("X-Accepted-Stream-Protocol-Versions", p) for p in supported])
        headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                   ("X-Stream-Protocol-Version", protocol)]

        def start(transport: asyncio.Transport, leftover: bytes) -> None:
            conn = SpdyConnection(server=True)
            _switch(transport, conn, leftover)
            if isinstance(stream_request, PortForwardRequest):
                work = handlers.spdy_port_forward(conn, stream_request, self.backend, self.limits)
            else:
                work = handlers.spdy_remote_command(conn, stream_request, protocol, self.backend, self.limits)
            self._spawn(stream_request, protocol, conn, work)

        return headers, start

    def _websocket(self, request: h11.Request, stream_request: StreamRequest,
                   query: dict[str, list[str]]) -> tuple[list[tuple[str, str]], Any]:
        key = _values(request, b"sec-websocket-key")
        if not key or _values(request, b"sec-websocket-version") != ["13"]:
            raise _Refused(400, "unable to upgrade: a WebSocket upgrade needs Sec-WebSocket-Key and "
                           "Sec-WebSocket-Version: 13")
        offered = _values(request, b"sec-websocket-protocol")
        forward = isinstance(stream_request, PortForwardRequest)
        supported = WS_PORT_FORWARD if forward else WS_REMOTE_COMMAND
        protocol = _negotiate(offered, supported) if offered else ""
        if protocol is None:
            raise _Refused(400, f"unable to upgrade: requested protocol(s) are not supported: {offered}; "
                           f"supports {list(supported)}")
        ports: tuple[int, ...] = ()
        if forward and not protocol.startswith(ws.SPDY_TUNNEL_PREFIX):
            try:
                ports = tuple(portforward.parse_port(p) for p in query.get("port", []))
            except ValueError as exc:
                raise _Refused(400, f"invalid port: {exc}") from None
            if not ports:
                raise _Refused(400, 'query parameter "port" is required')
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Accept", ws.accept_key(key[0]))]
        if protocol:
            headers.append(("Sec-WebSocket-Protocol", protocol))

        def start(transport: asyncio.Transport, leftover: bytes) -> None:
            conn = WebSocketConnection(client=False)
            if protocol.startswith(ws.SPDY_TUNNEL_PREFIX):
                assert isinstance(stream_request, PortForwardRequest)
                tunnel = conn.start_tunnel()
                _switch(transport, conn, leftover)
                spdy_conn = SpdyConnection(server=True)
                tunnel.set_protocol(spdy_conn)
                spdy_conn.connection_made(tunnel)
                conn.replay_into_tunnel()
                work = handlers.spdy_port_forward(spdy_conn, stream_request, self.backend, self.limits,
                                                  idle_of=conn)
                self._spawn(stream_request, protocol, conn, work, also=spdy_conn)
                return
            _switch(transport, conn, leftover)
            if isinstance(stream_request, PortForwardRequest):
                work = handlers.ws_port_forward(conn, stream_request, protocol, ports, self.backend,
                                                self.limits)
            else:
                work = handlers.ws_remote_command(conn, stream_request, protocol, self.backend, self.limits)
            self._spawn(stream_request, protocol, conn, work)

        return headers, start

    def _spawn(self, request: StreamRequest, protocol: str, conn: SpdyConnection | WebSocketConnection,
               work: Any, also: SpdyConnection | None = None) -> None:
        self.server.sessions.spawn(request.kind, _session(request, protocol, conn, work, also))


async def _session(request: StreamRequest, protocol: str, conn: SpdyConnection | WebSocketConnection,
                   work: Any, also: SpdyConnection | None) -> None:
    started = time.monotonic()
    outcome = "cancelled"
    try:
        outcome = await work
    except asyncio.CancelledError:
        outcome = "ended by shutdown"
        raise
    except Exception as exc:
        outcome = f"failed: {exc!r}"
        _log.exception("streaming session failed")
    finally:
        if also is not None:
            also.close()
        if isinstance(conn, WebSocketConnection):
            conn.close_nowait(ws.CLOSE_NORMAL if outcome != "ended by shutdown" else ws.CLOSE_GOING_AWAY)
        else:
            conn.close()
        target = getattr(request, "container_id", "") or getattr(request, "sandbox_id", "")
        log.event(_log, 20, "stream session", kind=request.kind.value, target=target[:12],
                  protocol=protocol or "websocket", outcome=outcome,
                  duration_ms=round((time.monotonic() - started) * 1000, 1))


class Handshake(asyncio.Protocol):
    """One TCP (or TLS) connection until it upgrades: read the request head, answer, hand over."""

    def __init__(self, upgrader: Upgrader) -> None:
        self.server = upgrader
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self.request: h11.Request | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.server.limits.creation_timeout, transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        try:
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Request):
                    self.request = event
                elif event is h11.PAUSED or isinstance(event, h11.EndOfMessage):
                    self._answer()
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except h11.RemoteProtocolError as exc:
            self._refuse(_Refused(400, f"bad request: {exc}"))

    def _answer(self) -> None:
        assert self.transport is not None
        assert self.request is not None
        transport = self.transport
        try:
            headers, start = self.server.upgrade(self.request)
        except _Refused as refused:
            self._refuse(refused)
            return
        transport.pause_reading()
        transport.write(self.h11.send(_SWITCHING(status_code=101, headers=headers,
                                                                reason=b"Switching Protocols")))
        if self.timer is not None:
            self.timer.cancel()
        start(transport, self.h11.trailing_data[0])

    def _refuse(self, refused: _Refused) -> None:
        assert self.transport is not None
        body = "404 page not found\n" if refused.status == 404 else f"{refused}\n"
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body.encode()))),
                   ("Connection", "close"), *refused.headers]
        try:
            out = self.h11.send(_ANSWER(status_code=refused.status, headers=headers))
            out = (out or b"") + (self.h11.send(h11.Data(data=body.encode())) or b"")
            out += self.h11.send(h11.EndOfMessage()) or b""
            self.transport.write(out)
        except h11.LocalProtocolError:
            pass
        self.transport.close()



__all__ = ["Handshake", "Upgrader"]
