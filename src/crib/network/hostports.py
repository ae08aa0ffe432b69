"""Host ports of pods' port mappings, held open by crib while the pod's network is up (as CRI-O does).

portmap only writes DNAT rules: nothing stops a second pod, or any process on the node, from claiming the
same port, and then traffic silently goes to whichever rule or socket wins. So before a pod's CNI ADD
every mapping with a hostPort is reserved twice over:

- against the pods crib already holds ports for (an in-memory table): a clash names the pod that has it;
- against the rest of the node, by binding a socket on (host IP or the wildcard, port, protocol) and
  keeping it open: a process already there makes the bind fail, and while crib holds it no process can
  take the port. TCP sockets are bound but never listen, so a connection the DNAT rule does not catch is
  refused rather than left hanging in a backlog.

A wildcard mapping (no host IP) clashes with any mapping of the same port and protocol, as it does for
sockets. SCTP ports are checked against crib's own table only when the kernel has no SCTP sockets. The
reservation is released when the pod's attachments are all deleted (StopPodSandbox); a restarted daemon
takes the ports of the attachments it finds complete in its CNI cache again (the old sockets died with
the old process).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from crib import log
from crib.errors import FailedPrecondition, InvalidArgument
from crib.network.types import PortMapping

_log = log.get(__name__)

_KINDS = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0),
          "sctp": (socket.SOCK_STREAM, socket.IPPROTO_SCTP)}


@dataclass(frozen=True, slots=True)
class HostPort:
    """One reserved (protocol, host IP or "", port)."""

    protocol: str
    host_ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol} on {self.host_ip or 'all addresses'}"

    def clashes(self, other: HostPort) -> bool:
        return (self.port == other.port and self.protocol == other.protocol
                and (self.host_ip == other.host_ip or not self.host_ip or not other.host_ip))


def _bind(port: HostPort) -> socket.socket | None:
    """A socket holding port; None when the kernel cannot make one (no SCTP module).

    Raises:
        OSError: the bind failed (EADDRINUSE: someone else has it).
    """
    kind, proto = _KINDS[port.protocol]
    family = socket.AF_INET6 if ":" in port.host_ip else socket.AF_INET
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT):
            return None
        raise
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((port.host_ip or "0.0.0.0", port.port))
    except BaseException:
        sock.close()
        raise
    return sock


def host_ports(mappings: Iterable[PortMapping]) -> list[HostPort]:
    """The host ports a pod's mappings need (those without a host port need none).

    Raises:
        InvalidArgument: a port out of range, an unknown protocol or a host IP that is not an address.
    """
    out = []
    for index, pm in enumerate(mappings):
        if pm.host_port == 0:
            continue
        if not 0 < pm.host_port <= 65535:
            raise InvalidArgument(f"port_mappings[{index}].host_port {pm.host_port} is out of range 1-65535")
        protocol = pm.protocol.lower()
        if protocol not in _KINDS:
            raise InvalidArgument(f"port_mappings[{index}].protocol {pm.protocol!r} is not TCP, UDP or SCTP")
        host_ip = pm.host_ip
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise InvalidArgument(f"port_mappings[{index}].host_ip {pm.host_ip!r} is not an IP "
                                      "address") from None
            if ipaddress.ip_address(host_ip).is_unspecified:
                host_ip = ""
        out.append(HostPort(protocol=protocol, host_ip=host_ip, port=pm.host_port))
    return out


def from_capability(entries: Iterable[dict[str, object]]) -> list[PortMapping]:
    """The mappings of a `portMappings` capability argument (as the CNI cache keeps it)."""
    return [PortMapping(protocol=str(e.get("protocol", "tcp")), container_port=int(str(e["containerPort"])),
                        host_port=int(str(e["hostPort"])), host_ip=str(e.get("hostIP", ""))) for e in entries]


class HostPorts:
    """The host ports of every pod whose network is up (see the module note). Not thread-safe: used
    from the event loop only."""

    def __init__(self, bind: Callable[[HostPort], socket.socket | None] = _bind) -> None:
        self._bind = bind
        self._held: dict[str, list[tuple[HostPort, socket.socket | None]]] = {}

    def reserve(self, owner: str, mappings: Iterable[PortMapping]) -> None:
        """Take every host port of the mappings for owner, or none of them.

        Raises:
            InvalidArgument: a malformed mapping.
            FailedPrecondition: a port is held by another pod (named) or in use on the node.
        """
        wanted = host_ports(mappings)
        self.release(owner)  # a pod set up again (a stale attachment redone) holds only the new set
        if not wanted:
            return
        taken: list[tuple[HostPort, socket.socket | None]] = []
        try:
            for port in wanted:
                self._check(owner, port, taken)
                taken.append((port, self._take(port)))
        except BaseException:
            for _, sock in taken:
                if sock is not None:
                    sock.close()
            raise
        self._held[owner] = taken

    def _take(self, port: HostPort) -> socket.socket | None:
        try:
            return self._bind(port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise FailedPrecondition(f"hostPort {port} is already in use on the node by a process crib "
                                         "does not manage; stop it or choose another hostPort") from None
            raise FailedPrecondition(f"cannot reserve hostPort {port}: {exc.strerror or exc}; check that "
                                     "port_mappings[].host_ip is an address of this node") from None

    def _check(self, owner: str, port: HostPort,
               taken: list[tuple[HostPort, socket.socket | None]]) -> None:
        for earlier, _ in taken:
            if earlier.clashes(port):
                raise InvalidArgument(f"hostPort {port} is mapped twice in this pod's port_mappings; "
                                      "give each mapping its own hostPort")
        for other, held in self._held.items():
            if other == owner:
                continue
            for have, _ in held:
                if have.clashes(port):
                    raise FailedPrecondition(f"hostPort {port} is already held by pod {other}; remove that "
                                             "pod or choose another hostPort")

    def release(self, owner: str) -> None:
        """Give back owner's ports (nothing happens when it holds none)."""
        for _, sock in self._held.pop(owner, ()):
            if sock is not None:
                sock.close()

    def held(self) -> dict[str, list[HostPort]]:
        """owner -> its ports (for status and tests)."""
        return {owner: [p for p, _ in ports] for owner, ports in self._held.items()}

    def close(self) -> None:
        for owner in list(self._held):
            self.release(owner)


__all__ = ["HostPort", "HostPorts", "from_capability", "host_ports"]
