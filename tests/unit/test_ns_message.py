"""The daemon <-> namespace helper wire format: what ns.py writes is what _nshelper.py reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from crib.system import _nshelper, ns
from crib.system.ns import _message


def test_request_round_trips() -> None:
    req = ns.PinRequest(user=Path("/r/user"), uid_map="0 100000 65536\n1 2 3\n", gid_map="0 100000 65536\n",
                        net=Path("/r/net"), uts=Path("/r/uts"), hostname="web-0",
                        sysctls={"net.ipv4.ping_group_range": "0 2147483647", "kernel.shmmni": "4096",
                                 "net/ipv4/conf/eth0.100/forwarding": "1"})
    got = _nshelper.parse(_message(req, 7, 20.0))
    assert got.fields == {"id": "7", "timeout": "15.000", "user": "/r/user", "uid_map": req.uid_map,
                          "gid_map": req.gid_map, "net": "/r/net", "uts": "/r/uts", "hostname": "web-0"}
    assert got.sysctls == dict(req.sysctls or {})
    assert got.get("ipc") == ""


def test_hostname_only_travels_with_a_uts_namespace() -> None:
    got = _nshelper.parse(_message(ns.PinRequest(net=Path("/r/net"), hostname="web-0"), 1, 1.0))
    assert got.get("hostname") == ""
    assert got.get("net") == "/r/net"


def test_targets_list_the_owner_first() -> None:
    req = ns.PinRequest(net=Path("n"), ipc=Path("i"), uts=Path("u"), user=Path("us"), uid_map="0 1 1",
                        gid_map="0 1 1")
    assert ns.targets(req) == [Path("us"), Path("n"), Path("i"), Path("u")]


@pytest.mark.parametrize(("text", "maps_root"), [
    ("0 100000 65536\n", True), ("1000 100000 1\n", False), ("5 1 1\n0 7 1\n", True), ("0 1 0\n", False),
], ids=["root-range", "no-root", "root-on-second-line", "empty-range"])
def test_maps_root(text: str, maps_root: bool) -> None:
    assert _nshelper._maps_root(text) is maps_root
