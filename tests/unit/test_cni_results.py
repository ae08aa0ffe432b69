"""Parsing CNI ADD results and choosing the pod's IPs from them."""

from __future__ import annotations

from typing import Any

import pytest

from crib.network import results

# What bridge + host-local (1.0.0) return, followed by loopback's pass-through.
BRIDGE_RESULT: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
        {"name": "veth1234", "mac": "bb:bb:bb:bb:bb:bb"},
        {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/crib/netns/abc"},
    ],
    "ips": [
        {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
        {"interface": 2, "address": "10.88.0.5/16", "gateway": "10.88.0.1"},
        {"interface": 0, "address": "10.88.0.1/16"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
    "dns": {"nameservers": ["10.88.0.1"], "search": ["svc.local"], "options": ["ndots:5"]},
}


def test_parse_full_result() -> None:
    r = results.parse(BRIDGE_RESULT)
    assert r.cni_version == "1.0.0"
    assert [i.name for i in r.interfaces] == ["cni0", "veth1234", "eth0"]
    assert r.interfaces[2].sandbox == "/run/crib/netns/abc"
    assert r.ips[1] == results.IPConfig(address="10.88.0.5/16", gateway="10.88.0.1", interface=2)
    assert r.ips[1].ip == "10.88.0.5"
    assert r.routes[1] == results.Route(dst="::/0", gw="fd00::1")
    assert r.dns == results.DNS(nameservers=("10.88.0.1",), search=("svc.local",), options=("ndots:5",))


def test_pod_ips_ipv4_first_and_only_the_pod_interface() -> None:
    assert results.pod_ips(results.parse(BRIDGE_RESULT), "eth0") == ("10.88.0.5", "fd00::5")


def test_v040_result_with_version_keys() -> None:
    doc = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "/ns"}],
           "ips": [{"version": "4", "address": "10.1.0.9/24", "interface": 0}]}
    assert results.pod_ips(results.parse(doc), "eth0") == ("10.1.0.9",)


def test_loopback_addresses_never_count() -> None:
    doc = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": "/ns"}],
           "ips": [{"address": "127.0.0.1/8", "interface": 0}, {"address": "::1/128", "interface": 0}]}
    assert results.pod_ips(results.parse(doc), "lo") == ()


def test_ips_without_interfaces_all_count() -> None:
    doc = {"cniVersion": "1.0.0", "ips": [{"address": "fd00::7/64"}, {"address": "10.2.0.7/24"},
                                          {"address": "10.2.0.7/24"}]}
    assert results.pod_ips(results.parse(doc), "eth0") == ("10.2.0.7", "fd00::7")


def test_ip_with_out_of_range_interface_is_not_the_pods() -> None:
    doc = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/ns"}],
           "ips": [{"address": "10.2.0.7/24", "interface": 3}]}
    assert results.pod_ips(results.parse(doc), "eth0") == ()


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ([], "must be a JSON object"),
        ({"ip4": {"ip": "10.0.0.2/24"}}, "0.1.0/0.2.0 results"),
        ({"interfaces": {}}, "\"interfaces\" must be a list"),
        ({"interfaces": [{"mac": "x"}]}, "interfaces[0] must be an object with a \"name\""),
        ({"ips": [{"gateway": "10.0.0.1"}]}, "ips[0] must be an object with an \"address\""),
        ({"ips": [{"address": "10.0.0.300/24"}]}, "is not an address in CIDR form"),
        ({"ips": [{"address": "10.0.0.3/24", "interface": -1}]}, "must be an index"),
        ({"ips": [{"address": "10.0.0.3/24", "interface": True}]}, "must be an index"),
        ({"routes": [{"gw": "10.0.0.1"}]}, "routes[0] must be an object with a \"dst\""),
        ({"dns": []}, "\"dns\" must be an object"),
        ({"dns": {"nameservers": "1.1.1.1"}}, "dns.nameservers must be a list of strings"),
    ],
    ids=["not-object", "old-format", "interfaces-type", "interface-name", "ip-address", "bad-cidr",
         "negative-index", "bool-index", "route-dst", "dns-type", "nameservers-type"],
)
def test_invalid_results(doc: Any, needle: str) -> None:
    with pytest.raises(results.ResultInvalid) as info:
        results.parse(doc)
    assert needle in str(info.value)
