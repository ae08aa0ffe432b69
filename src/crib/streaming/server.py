"""The streaming server: the URLs Exec, Attach and PortForward return, and the connections made to them.

Routes (as kubelet's CRI streaming library serves them): `GET|POST /exec/<token>`, `/attach/<token>`,
`/portforward/<token>`; each token is single-use and expires unused (sessions.py). Anything else, and any
unknown, used or expired token, is a bare 404: nothing else is served, nothing leaks. A request must be an
upgrade, to SPDY/3.1 (`X-Stream-Protocol-Version` negotiated in the client's order; no common version is
403 with `X-Accepted-Stream-Protocol-Versions`) or to WebSocket (`Sec-WebSocket-Protocol` likewise). That
HTTP/1.1 side lives in _upgrade.py (h11 parses the head), loaded with all the session code on the first
connection, so an idle daemon pays nothing for it; after the 101 the socket belongs to the SPDY or
WebSocket protocol (transport.set_protocol) and the session runs in its own task (handlers.py).

TLS: with `tls_cert`/`tls_key` the server speaks HTTPS; with `tls_ca` too it requires client certificates
signed by that CA. A connection that has not upgraded within the creation timeout is dropped.

Restart story: close() stops listening and cancels every session; a cancelled exec kills its process, an
attach closes its conmon connection, a port forward its pod sockets. The containers are never touched.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from crib import log
from crib.config import StreamConfig
from crib.errors import ConfigError
from crib.streaming.backend import Backend, StreamRequest
from crib.streaming.sessions import Limits, Sessions, TokenCache

_log = log.get(__name__)

SHUTDOWN_GRACE = 5.0


class StreamServer:
    """Serves the streaming URLs (see the module note).

    Args:
        cfg: the [stream] configuration.
        backend: the node, as sessions need it.
    """

    def __init__(self, cfg: StreamConfig, backend: Backend) -> None:
        self.cfg = cfg
        self.backend = backend
        self.tokens = TokenCache(float(cfg.creation_timeout))
        self.sessions = Sessions()
        self.limits = Limits(creation_timeout=float(cfg.creation_timeout),
                                      idle_timeout=float(cfg.idle_timeout) or float("inf"))
        self._server: asyncio.Server | None = None
        self._upgrader: Any = None
        self.base_url = ""

    async def start(self) -> None:
        """Listen on [stream] address:port (port 0: any free port).

        Raises:
            ConfigError: the TLS files cannot be used or the address cannot be bound.
        """
        context = self._tls()
        try:
            self._server = await asyncio.get_running_loop().create_server(
                self._protocol, self.cfg.address or None, self.cfg.port, ssl=context,
                reuse_address=True)
        except OSError as exc:
            raise ConfigError(f"stream server cannot listen on {self.cfg.address}:{self.cfg.port}: "
                              f"{exc.strerror or exc}; change [stream] address or port") from exc
        port = self._server.sockets[0].getsockname()[1]
        host = self.cfg.address or "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host)
            if ip.is_unspecified:  # kubelet dials the URL from this node
                host = "::1" if ip.version == 6 else "127.0.0.1"
            if ip.version == 6:
                host = f"[{host}]"
        except ValueError:
            pass  # a host name
        self.base_url = f"{'https' if context else 'http'}://{host}:{port}"
        log.event(_log, 20, "stream server listening", url=self.base_url, tls=context is not None)

    def _tls(self) -> Any:
        cfg = self.cfg
        if not cfg.tls_cert and not cfg.tls_key:
            return None
        import ssl  # only with TLS

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            if cfg.tls_ca:
                context.load_verify_locations(cfg.tls_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"stream server TLS: {exc}; check [stream] tls_cert, tls_key and "
                              "tls_ca") from exc
        return context

    def _protocol(self) -> asyncio.Protocol:
        if self._upgrader is None:
            from crib.streaming import _upgrade  # the first connection loads the HTTP side

            self._upgrader = _upgrade.Upgrader(self)
        protocol: asyncio.Protocol = self._upgrader.handshake()
        return protocol

    def url(self, request: StreamRequest) -> str:
        """A single-use URL for request.

        Raises:
            ResourceExhausted: too many URLs wait for their client.
        """
        return f"{self.base_url}/{request.kind.value}/{self.tokens.issue(request)}"

    def session_counts(self) -> dict[str, int]:
        """Live sessions per kind, every kind present: {"exec": n, "attach": n, "portforward": n}
        (for the metric crib_streaming_sessions)."""
        return self.sessions.counts()

    async def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop listening and end every session (see the module note)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.sessions.close(grace)



__all__ = ["StreamServer"]
