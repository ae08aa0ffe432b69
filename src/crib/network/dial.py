"""Connections to a pod's own ports, for port forwarding: localhost inside the pod's network namespace.

Like kubelet's runtimes, the target is the pod's loopback: 127.0.0.1 first, then ::1 when IPv4 is refused
(a server listening on IPv6 only). A pod on the host's network is dialled from the host. The pod is
checked before each connection, so a forward to a pod that stopped meanwhile fails with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable

from crib.system.netns import NetnsSockets

CONNECT_TIMEOUT = 10.0


class PodDialer:
    """Dials ports of one pod (see the module note).

    Args:
        netns_path: the pod's pinned network namespace; "" for a pod on the host's network.
        check: raises (a CribError) when the pod can no longer be dialled.
    """

    def __init__(self, netns_path: str, check: Callable[[], None]) -> None:
        self._check = check
        self._netns = NetnsSockets(netns_path) if netns_path else None
        self._closed = False

    async def _socket(self, family: int) -> socket.socket:
        if self._netns is not None:
            return await self._netns.socket(family)
        if self._closed:
            raise OSError(errno.ENETDOWN, "the pod's network namespace was released")
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        return sock

    async def dial(self, port: int) -> socket.socket:
        """A connected non-blocking socket to the pod's localhost:port.

        Raises:
            OSError: both loopback addresses refused (or another connect error).
            CribError: the pod stopped.
        """
        try:
            self._check()
        except Exception:
            self.close()  # the pod is gone: let its namespace go now, not when the client hangs up
            raise
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = await self._socket(family)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.sock_connect(sock, (host, port))
            except TimeoutError:
                sock.close()
                raise OSError(errno.ETIMEDOUT, f"connecting to localhost:{port} timed out") from None
            except OSError as exc:
                sock.close()
                last = exc
                if exc.errno not in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT,
                                     errno.ENETUNREACH):
                    raise
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        assert last is not None
        raise OSError(last.errno, f"connection to localhost:{port} refused in the pod's network") from last

    def close(self) -> None:
        self._closed = True
        if self._netns is not None:
            self._netns.close()
            self._netns = None


__all__ = ["PodDialer"]
