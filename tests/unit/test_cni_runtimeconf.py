"""CNI_ARGS, capability arguments and runtimeConfig derivation."""

from __future__ import annotations

import pytest

from crib.errors import InvalidArgument
from crib.network import PodNetworkRequest, PortMapping
from crib.network import runtimeconf as rc


def request(**over: object) -> PodNetworkRequest:
    base: dict[str, object] = {"sandbox_id": "a" * 64, "name": "web", "namespace": "default", "uid": "u-1",
                               "netns_path": "/run/crib/netns/x"}
    base.update(over)
    return PodNetworkRequest(**base)  # type: ignore[arg-type]


def test_cni_args_carry_the_pod_identity_in_kubelet_order() -> None:
    assert rc.cni_args(request()) == (
        ("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web"),
        ("K8S_POD_INFRA_CONTAINER_ID", "a" * 64), ("K8S_POD_UID", "u-1"))


@pytest.mark.parametrize("field", ["name", "namespace", "uid"], ids=["name", "namespace", "uid"])
def test_cni_args_refuse_separators(field: str) -> None:
    with pytest.raises(InvalidArgument, match="CNI_ARGS cannot carry"):
        rc.cni_args(request(**{field: "a;b=c"}))


def test_port_mappings_skip_container_only_ports_and_keep_host_ip() -> None:
    caps = rc.capability_args(request(port_mappings=(
        PortMapping(protocol="TCP", container_port=80, host_port=8080),
        PortMapping(protocol="udp", container_port=53, host_port=5353, host_ip="127.0.0.1"),
        PortMapping(protocol="tcp", container_port=9000, host_port=0),
    )))
    assert caps == {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
    ]}


def test_dns_and_cgroup_path() -> None:
    caps = rc.capability_args(request(dns_servers=("10.96.0.10",), dns_searches=("svc.cluster.local",),
                                      dns_options=("ndots:5",), cgroup_parent="/kubepods/pod1"))
    assert caps == {"dns": {"servers": ["10.96.0.10"], "searches": ["svc.cluster.local"],
                            "options": ["ndots:5"]},
                    "cgroupPath": "/kubepods/pod1"}


def test_nothing_to_offer_is_empty() -> None:
    assert rc.capability_args(request()) == {}


@pytest.mark.parametrize(
    ("text", "value"),
    [("10M", 10_000_000), ("1Gi", 2**30), ("512k", 512_000), ("1.5M", 1_500_000), ("2e6", 2_000_000),
     ("1000", 1000), ("1500m", 2)],
    ids=["mega", "gibi", "kilo", "fraction", "exponent", "plain", "milli-rounds-up"],
)
def test_quantities(text: str, value: int) -> None:
    assert rc.parse_quantity(text) == value


def test_bandwidth_annotations() -> None:
    caps = rc.capability_args(request(annotations={rc.INGRESS_BANDWIDTH: "10M", rc.EGRESS_BANDWIDTH: "1Mi"}))
    assert caps["bandwidth"] == {"ingressRate": 10_000_000, "ingressBurst": rc.BANDWIDTH_BURST,
                                 "egressRate": 2**20, "egressBurst": rc.BANDWIDTH_BURST}
    only_egress = rc.bandwidth({rc.EGRESS_BANDWIDTH: "5M"})
    assert only_egress == {"egressRate": 5_000_000, "egressBurst": rc.BANDWIDTH_BURST}


@pytest.mark.parametrize(
    ("value", "needle"),
    [("fast", "is not a quantity"), ("10", "out of range"), ("2P", "out of range"),
     ("1..2M", "is not a quantity")],
    ids=["word", "too-small", "too-large", "two-dots"],
)
def test_bad_bandwidth_is_invalid_argument(value: str, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle) as info:
        rc.capability_args(request(annotations={rc.INGRESS_BANDWIDTH: value}))
    assert rc.INGRESS_BANDWIDTH in str(info.value)


def test_runtime_config_is_the_intersection_of_declared_and_offered() -> None:
    caps = {"portMappings": [{"hostPort": 1}], "bandwidth": {"ingressRate": 1}, "dns": {}}
    plugin = {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False, "ips": True}}
    assert rc.runtime_config(plugin, caps) == {"portMappings": [{"hostPort": 1}]}
    assert rc.runtime_config({"type": "bridge"}, caps) == {}
