"""The contract between the sandbox lifecycle and pod networking (see the package note)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field

from crib.runtime.health import NETWORK_READY, Condition


@dataclass(frozen=True, slots=True, kw_only=True)
class PortMapping:
    """A CRI PortMapping, in crib's terms: protocol is "tcp", "udp" or "sctp"."""

    protocol: str
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PodNetworkRequest:
    """Everything CNI ADD/DEL needs to know about one pod."""

    sandbox_id: str
    name: str
    namespace: str
    uid: str
    netns_path: str
    port_mappings: tuple[PortMapping, ...] = ()
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PodNetworkStatus:
    """The outcome of setting up a pod's network: its IPs, primary first (IPv4 before IPv6)."""

    ips: tuple[str, ...] = ()
    network_name: str = ""
    interface: str = ""


class PodNetwork(typing.Protocol):
    """What the sandbox lifecycle needs of pod networking."""

    async def setup(self, request: PodNetworkRequest) -> PodNetworkStatus:
        """CNI ADD for the pod; on failure nothing of it is left (DEL already ran)."""

    async def teardown(self, request: PodNetworkRequest) -> None:
        """CNI DEL for the pod; idempotent, and works when the netns is already gone."""

    def condition(self) -> Condition:
        """The NetworkReady condition."""


class NetworkAdmin(typing.Protocol):
    """What the RuntimeService needs of pod networking besides readiness: Status info and the pod CIDR."""

    def status_info(self) -> dict[str, str]:
        """Verbose Status info entries (each value JSON)."""

    async def update_pod_cidr(self, pod_cidr: str) -> None:
        """kubelet's pod CIDR from UpdateRuntimeConfig."""


class NoNetwork:
    """Loopback only (the sandbox brings lo up when it pins the netns); NetworkReady stays false."""

    async def setup(self, request: PodNetworkRequest) -> PodNetworkStatus:
        return PodNetworkStatus()

    async def teardown(self, request: PodNetworkRequest) -> None:
        return None

    def condition(self) -> Condition:
        return Condition(type=NETWORK_READY, status=False, reason="NetworkPluginNotReady",
                         message="crib has no CNI network manager yet")

    def status_info(self) -> dict[str, str]:
        return {}

    async def update_pod_cidr(self, pod_cidr: str) -> None:
        return None


__all__ = ["NetworkAdmin", "NoNetwork", "PodNetwork", "PodNetworkRequest", "PodNetworkStatus", "PortMapping"]
