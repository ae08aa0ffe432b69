"""NetworkReady, Status info and UpdateRuntimeConfig through a real daemon (pods: test_network_pods.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures.cni import free_subnet
from tests.fixtures.daemon import CribDaemon


def network_condition(daemon: CribDaemon) -> api.RuntimeCondition:
    resp = daemon.runtime.Status(api.StatusRequest(), timeout=5)
    (cond,) = [c for c in resp.status.conditions if c.type == "NetworkReady"]
    return cond


def wait_network(daemon: CribDaemon, ready: bool, timeout: float = 10.0) -> api.RuntimeCondition:
    deadline = time.monotonic() + timeout
    while True:
        cond = network_condition(daemon)
        if cond.status == ready:
            return cond
        assert time.monotonic() < deadline, f"NetworkReady stayed {cond.status}: {cond.message}"
        time.sleep(0.1)


def conflist(name: str, bridge: str, subnet: str, data_dir: Path) -> str:
    return json.dumps({"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True,
         "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(data_dir)}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]})


def test_broken_conflist_is_not_ready_until_fixed_without_a_restart(
        crib_factory: Callable[..., CribDaemon], tmp_path: Path, session_tag: str) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    path = conf_dir / "10-test.conflist"
    path.write_text('{"cniVersion": "1.0.0", "name": "x", "plugins": [')
    daemon = crib_factory({"network": {"conf_dirs": [str(conf_dir)], "write_default_conflist": False}})
    cond = network_condition(daemon)
    assert not cond.status
    assert cond.reason == "NetworkPluginNotReady"
    assert f"{path}: not valid JSON" in cond.message
    verbose = daemon.runtime.Status(api.StatusRequest(verbose=True), timeout=5)
    assert "not valid JSON" in json.loads(verbose.info["lastCNILoadStatus"])
    assert json.loads(verbose.info["cniconfig"])["defaultNetwork"] is None

    path.write_text(conflist(f"{session_tag}-d", "unusedbr0", "10.250.250.0/24", tmp_path / "leases"))
    wait_network(daemon, True)
    verbose = daemon.runtime.Status(api.StatusRequest(verbose=True), timeout=5)
    info = json.loads(verbose.info["cniconfig"])
    assert info["defaultNetwork"] == f"{session_tag}-d"
    assert info["networks"][0]["plugins"] == ["bridge", "portmap"]
    assert json.loads(verbose.info["lastCNILoadStatus"]) == "OK"
    daemon.wait_for_log("CNI network ready")

    path.unlink()
    cond = wait_network(daemon, False)
    assert "no CNI network config found" in cond.message
    assert daemon.runtime.Status(api.StatusRequest(), timeout=5).info == {}  # info only when verbose


def test_missing_plugin_and_version_mismatch_are_named(crib_factory: Callable[..., CribDaemon],
                                                        tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-a.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "no-such-plugin"}]}))
    (conf_dir / "20-b.conflist").write_text(json.dumps(
        {"cniVersion": "1.1.0", "name": "b", "plugins": [{"type": "loopback"}]}))
    daemon = crib_factory({"network": {"conf_dirs": [str(conf_dir)]}})
    cond = network_condition(daemon)
    assert not cond.status
    assert "CNI plugin 'no-such-plugin' not found in /opt/cni/bin:/usr/lib/cni" in cond.message
    assert "plugin 'loopback' supports CNI versions" in cond.message


def test_default_conflist_and_pod_cidr(crib_factory: Callable[..., CribDaemon], tmp_path: Path,
                                       session_tag: str) -> None:
    conf_dir = tmp_path / "net.d"
    bridge = session_tag[:14] + "w"
    subnet = str(free_subnet())
    daemon = crib_factory({"network": {"conf_dirs": [str(conf_dir)], "write_default_conflist": True,
                                       "default_bridge": bridge, "default_subnet": subnet}})
    path = conf_dir / "10-crib.conflist"
    doc = json.loads(path.read_text())
    assert doc["name"] == "crib"
    assert [p["type"] for p in doc["plugins"]] == ["bridge", "portmap", "loopback"]
    assert doc["plugins"][0]["bridge"] == bridge
    assert doc["plugins"][0]["ipam"]["ranges"] == [[{"subnet": subnet}]]
    assert doc["plugins"][0]["ipam"]["dataDir"] == str(daemon.root / "cni" / "networks")
    assert network_condition(daemon).status

    pod_cidr = str(free_subnet())
    daemon.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(runtime_config=api.RuntimeConfig(
        network_config=api.NetworkConfig(pod_cidr=pod_cidr))), timeout=5)
    assert json.loads(path.read_text())["plugins"][0]["ipam"]["ranges"] == [[{"subnet": pod_cidr}]]
    info = json.loads(daemon.runtime.Status(api.StatusRequest(verbose=True), timeout=5).info["cniconfig"])
    assert info["podCIDR"] == pod_cidr
    assert info["defaultConflistWritten"] == str(path)

    with pytest.raises(grpc.RpcError) as err:
        daemon.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(runtime_config=api.RuntimeConfig(
            network_config=api.NetworkConfig(pod_cidr="10.0.0.1/8"))), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pod_cidr '10.0.0.1/8'" in str(err.value.details())
    # An empty pod CIDR (kubelet sends other runtime config that way) changes nothing.
    daemon.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(), timeout=5)
    assert json.loads(path.read_text())["plugins"][0]["ipam"]["ranges"] == [[{"subnet": pod_cidr}]]

    # Restarted, crib keeps kubelet's CIDR (kubelet does not send it again) and does not rewrite the file.
    daemon.restart()
    info = json.loads(daemon.runtime.Status(api.StatusRequest(verbose=True), timeout=5).info["cniconfig"])
    assert info["podCIDR"] == pod_cidr
    assert json.loads(path.read_text())["plugins"][0]["ipam"]["ranges"] == [[{"subnet": pod_cidr}]]


def test_no_default_conflist_when_turned_off(crib_factory: Callable[..., CribDaemon], tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    daemon = crib_factory({"network": {"conf_dirs": [str(conf_dir)], "write_default_conflist": False}})
    cond = network_condition(daemon)
    assert "network.write_default_conflist is off" in cond.message
    assert not conf_dir.exists()
