"""Host-port reservations: clashes between pods and with the node, wildcard rules, all-or-nothing."""

from __future__ import annotations

import socket

import pytest

from crib.errors import FailedPrecondition, InvalidArgument
from crib.network import PortMapping
from crib.network.hostports import HostPort, HostPorts, host_ports


def pm(port: int, protocol: str = "tcp", ip: str = "") -> PortMapping:
    return PortMapping(protocol=protocol, container_port=80, host_port=port, host_ip=ip)


class FakeNode:
    """Stands in for bind(): ports listed in `busy` are in use by some other process."""

    def __init__(self, *busy: int) -> None:
        self.busy = set(busy)
        self.bound: list[HostPort] = []

    def __call__(self, port: HostPort) -> socket.socket | None:
        if port.port in self.busy:
            raise OSError(98, "Address already in use")
        self.bound.append(port)
        return None


@pytest.mark.parametrize(("first", "second", "clash"), [
    (pm(8080), pm(8080), True),
    (pm(8080), pm(8080, ip="127.0.0.1"), True),  # the wildcard covers every address
    (pm(8080, ip="127.0.0.1"), pm(8080, ip="127.0.0.2"), False),
    (pm(8080), pm(8080, "udp"), False),
    (pm(8080), pm(8081), False),
    (pm(8080, ip="0.0.0.0"), pm(8080, ip="10.0.0.1"), True),  # 0.0.0.0 is the wildcard spelled out
], ids=["same", "wildcard-vs-ip", "two-ips", "tcp-vs-udp", "other-port", "explicit-wildcard"])
def test_a_second_pod_clashing_is_refused_naming_the_first(first: PortMapping, second: PortMapping,
                                                           clash: bool) -> None:
    ports = HostPorts(bind=FakeNode())
    ports.reserve("pod-a", [first])
    if clash:
        with pytest.raises(FailedPrecondition, match="is already held by pod pod-a; remove that pod"):
            ports.reserve("pod-b", [second])
        assert set(ports.held()) == {"pod-a"}
    else:
        ports.reserve("pod-b", [second])
        assert set(ports.held()) == {"pod-a", "pod-b"}


def test_a_port_busy_on_the_node_is_refused_and_nothing_is_kept() -> None:
    node = FakeNode(9090)
    ports = HostPorts(bind=node)
    with pytest.raises(FailedPrecondition, match="9090/tcp on all addresses is already in use on the node"):
        ports.reserve("pod-a", [pm(8080), pm(9090)])
    assert ports.held() == {}
    ports.reserve("pod-b", [pm(8080)])  # 8080 was given back with the failed reservation


def test_release_gives_the_ports_back_and_a_pod_mapping_a_port_twice_is_refused() -> None:
    ports = HostPorts(bind=FakeNode())
    ports.reserve("pod-a", [pm(8080), pm(0)])
    assert ports.held() == {"pod-a": [HostPort("tcp", "", 8080)]}  # no hostPort, nothing to hold
    ports.release("pod-a")
    ports.reserve("pod-b", [pm(8080)])
    with pytest.raises(InvalidArgument, match="mapped twice in this pod's port_mappings"):
        ports.reserve("pod-c", [pm(7070), pm(7070, ip="127.0.0.1")])


@pytest.mark.parametrize(("mapping", "needle"), [
    (pm(70000), "port_mappings[0].host_port 70000 is out of range"),
    (pm(-1), "port_mappings[0].host_port -1 is out of range"),
    (pm(80, "icmp"), "port_mappings[0].protocol 'icmp' is not TCP, UDP or SCTP"),
    (pm(80, ip="localhost"), "port_mappings[0].host_ip 'localhost' is not an IP address"),
], ids=["too-big", "negative", "protocol", "host-ip"])
def test_malformed_mappings_are_invalid_arguments(mapping: PortMapping, needle: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        host_ports([mapping])
    assert needle in str(info.value)


def test_real_sockets_hold_the_port_against_other_processes() -> None:
    """The real binder: while crib holds a port, nobody else can bind it, and it is free after release."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ports = HostPorts()
    ports.reserve("pod-a", [pm(port, ip="127.0.0.1")])
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", port))
    with socket.socket() as other:  # a connection no DNAT rule catches is refused, not left hanging
        other.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            other.connect(("127.0.0.1", port))
    ports.close()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
