"""The CNI manager's logic with in-memory plugins: readiness, default config, ADD/DEL bookkeeping, undo."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crib.config import Duration, NetworkConfig
from crib.errors import FailedPrecondition, InvalidArgument, Unavailable
from crib.network import CNIManager, CNIPluginError, PodNetworkRequest, PortMapping, defaults
from crib.network.hostports import HostPorts
from crib.network.invoke import Outcome
from crib.testing.cni import FakePlugins

NETNS = "/run/test/netns/pod"
SID = "5" * 64


def conflist(name: str = "net1", version: str = "1.0.0",
             types: tuple[str, ...] = ("bridge", "portmap")) -> str:
    plugins: list[dict[str, Any]] = [{"type": t} for t in types]
    for p in plugins:
        if p["type"] == "portmap":
            p["capabilities"] = {"portMappings": True}
    return json.dumps({"cniVersion": version, "name": name, "plugins": plugins})


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out = {"conf": tmp_path / "net.d", "bin": tmp_path / "bin", "root": tmp_path / "root"}
    out["conf"].mkdir()
    out["bin"].mkdir()
    for name in ("bridge", "portmap", "loopback", "tuning"):
        (out["bin"] / name).write_text("#!/bin/false\n")
        (out["bin"] / name).chmod(0o755)
    return out


@pytest.fixture
def make(dirs: dict[str, Path]) -> Callable[..., tuple[CNIManager, FakePlugins]]:
    def build(fake: FakePlugins | None = None, **cfg: Any) -> tuple[CNIManager, FakePlugins]:
        fake = fake or FakePlugins()
        settings: dict[str, Any] = {"conf_dirs": [str(dirs["conf"])], "plugin_dirs": [str(dirs["bin"])],
                                    "write_default_conflist": False, "plugin_timeout": Duration(5)}
        settings.update(cfg)
        manager = CNIManager(NetworkConfig(**settings), root=str(dirs["root"]), runner=fake,
                             is_netns=lambda path: path == NETNS,
                             host_ports=HostPorts(bind=lambda port: None))
        return manager, fake

    return build


def request(**over: Any) -> PodNetworkRequest:
    base: dict[str, Any] = {
        "sandbox_id": SID, "name": "web", "namespace": "ns", "uid": "u", "netns_path": NETNS,
        "port_mappings": (PortMapping(protocol="tcp", container_port=80, host_port=8080),)}
    base.update(over)
    return PodNetworkRequest(**base)


def cached(dirs: dict[str, Path]) -> list[str]:
    d = dirs["root"] / "cni" / "results"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


async def test_no_config_is_not_ready_and_says_where_it_looked(make: Callable[..., Any],
                                                              dirs: dict[str, Path]) -> None:
    manager, _ = make()
    await manager.reload()
    cond = manager.condition()
    assert (cond.type, cond.status, cond.reason) == ("NetworkReady", False, "NetworkPluginNotReady")
    assert cond.message == (f"no CNI network config found in {dirs['conf']}; add a .conflist there "
                            "(network.write_default_conflist is off, so crib writes none)")
    with pytest.raises(Unavailable, match="NetworkPluginNotReady: no CNI network config"):
        await manager.setup(request())
    info = manager.status_info()
    assert json.loads(info["lastCNILoadStatus"]).startswith("no CNI network config found")
    assert json.loads(info["cniconfig"])["defaultNetwork"] is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{broken", "not valid JSON"),
        (conflist(types=("bridge", "nosuchplugin")), "CNI plugin 'nosuchplugin' not found in"),
        (conflist(version="1.1.0"), "supports CNI versions 0.3.0, 0.3.1, 0.4.0, 1.0.0, none of 1.1.0"),
        (conflist(version="0.1.0"), "cniVersion '0.1.0' is not one crib speaks"),
    ],
    ids=["json", "missing-plugin", "version-too-new", "version-too-old"],
)
async def test_broken_config_then_fixed_without_restart(make: Callable[..., Any], dirs: dict[str, Path],
                                                        text: str, needle: str) -> None:
    manager, _ = make()
    (dirs["conf"] / "10-net.conflist").write_text(text)
    await manager.reload()
    cond = manager.condition()
    assert not cond.status
    assert needle in cond.message
    assert "10-net.conflist" in cond.message
    (dirs["conf"] / "10-net.conflist").write_text(conflist())
    await manager.reload()
    assert manager.condition().status
    assert json.loads(manager.status_info()["lastCNILoadStatus"]) == "OK"


async def test_first_valid_file_wins_and_bad_ones_are_listed(make: Callable[..., Any],
                                                             dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "00-bad.conflist").write_text("{")
    (dirs["conf"] / "10-a.conflist").write_text(conflist("a"))
    (dirs["conf"] / "20-b.conflist").write_text(conflist("b"))
    manager, _ = make()
    await manager.reload()
    info = json.loads(manager.status_info()["cniconfig"])
    assert info["defaultNetwork"] == "a"
    assert info["cniVersion"] == "1.0.0"
    assert [n["name"] for n in info["networks"]] == ["", "a", "b"]
    assert "not valid JSON" in info["networks"][0]["error"]
    named, _ = make(default_network="b")
    await named.reload()
    assert json.loads(named.status_info()["cniconfig"])["defaultNetwork"] == "b"
    missing, _ = make(default_network="zzz")
    await missing.reload()
    assert "network.default_network is 'zzz' but no valid CNI config" in missing.condition().message
    assert "(valid networks: a, b)" in missing.condition().message


async def test_version_answers_are_cached_per_binary(make: Callable[..., Any], dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist())
    manager, fake = make()
    await manager.reload()
    await manager.reload()
    assert fake.commands("VERSION") == [("bridge", "VERSION"), ("portmap", "VERSION")]


async def test_setup_adds_and_caches_then_teardown_deletes_idempotently(make: Callable[..., Any],
                                                                        dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist())
    fake = FakePlugins(addresses=("fd00::5/64", "10.99.0.5/24"))
    manager, _ = make(fake)
    await manager.reload()
    status = await manager.setup(request())
    assert status.ips == ("10.99.0.5", "fd00::5")
    assert (status.network_name, status.interface) == ("net1", "eth0")
    assert cached(dirs) == [f"net1-{SID}-eth0"]
    entry = manager.attachments()[0]
    assert entry.complete
    assert entry.result is not None
    assert entry.netns == NETNS
    assert entry.capability_args["portMappings"][0]["hostPort"] == 8080
    fake.calls.clear()
    await manager.teardown(request())
    assert fake.commands() == [("portmap", "DEL"), ("bridge", "DEL")]
    assert fake.calls[0].conf["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080
    assert fake.calls[0].conf["prevResult"] == entry.result
    assert cached(dirs) == []
    await manager.teardown(request())  # nothing cached: nothing to do, no error
    assert fake.commands("DEL") == [("portmap", "DEL"), ("bridge", "DEL")]


async def test_teardown_uses_the_cached_config_after_the_file_changed(make: Callable[..., Any],
                                                                      dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist(types=("bridge", "portmap", "loopback")))
    manager, fake = make()
    await manager.reload()
    await manager.setup(request())
    (dirs["conf"] / "10-a.conflist").write_text(conflist(name="other", types=("tuning",)))
    await manager.reload()
    fake.calls.clear()
    await manager.teardown(request(netns_path="/gone"))
    assert fake.commands() == [("loopback", "DEL"), ("portmap", "DEL"), ("bridge", "DEL")]
    assert all(c.conf["name"] == "net1" for c in fake.calls)


async def test_teardown_after_the_netns_is_gone_passes_no_netns(make: Callable[..., Any],
                                                                dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist())
    manager, fake = make()
    await manager.reload()
    await manager.setup(request())
    manager._is_netns = lambda path: False  # the namespace was unpinned before DEL
    fake.calls.clear()
    await manager.teardown(request())
    assert [c.env["CNI_NETNS"] for c in fake.calls] == ["", ""]


async def test_failure_mid_chain_runs_del_for_the_whole_chain(make: Callable[..., Any],
                                                              dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist(types=("bridge", "portmap", "loopback")))
    manager, fake = make()
    await manager.reload()
    fake.fail("portmap", "ADD", code=7, msg="bad port", stderr="portmap: details")
    with pytest.raises(CNIPluginError) as info:
        await manager.setup(request())
    assert fake.commands()[-5:] == [("bridge", "ADD"), ("portmap", "ADD"), ("loopback", "DEL"),
                                    ("portmap", "DEL"), ("bridge", "DEL")]
    portmap_add = next(c for c in fake.calls if c.plugin == "portmap" and c.command == "ADD")
    bridge_result = portmap_add.conf["prevResult"]
    assert fake.calls[-1].conf["prevResult"] == bridge_result  # DEL got what the chain did so far
    assert str(info.value).endswith("; the partial attachment was removed (DEL ran)")
    assert "bad port" in str(info.value)
    assert "portmap: details" in str(info.value)
    assert cached(dirs) == []


async def test_failed_undo_keeps_the_entry_for_the_next_teardown(make: Callable[..., Any],
                                                                 dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist())
    manager, fake = make()
    await manager.reload()
    fake.fail("portmap", "ADD", msg="add failed")
    fake.fail("bridge", "DEL", msg="del failed")
    with pytest.raises(CNIPluginError, match=r"add failed; undoing it with DEL failed too \(.*del failed"):
        await manager.setup(request())
    assert cached(dirs) == [f"net1-{SID}-eth0"]
    fake.heal()
    await manager.teardown(request())
    assert cached(dirs) == []


async def test_cancelled_add_is_undone(make: Callable[..., Any], dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist())
    gate = asyncio.Event()

    class Slow(FakePlugins):
        async def exec(self, path: str, **kw: Any) -> Outcome:
            if path.endswith("portmap") and kw["env"]["CNI_COMMAND"] == "ADD":
                gate.set()
                await asyncio.sleep(3600)
            return await super().exec(path, **kw)

    fake = Slow()
    manager, _ = make(fake)
    await manager.reload()
    task = asyncio.create_task(manager.setup(request()))
    await gate.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not manager._background:
            break
        await asyncio.sleep(0)
    assert fake.commands("DEL") == [("portmap", "DEL"), ("bridge", "DEL")]
    assert cached(dirs) == []


async def test_a_leftover_entry_is_deleted_before_a_new_add(make: Callable[..., Any],
                                                            dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist())
    manager, fake = make()
    await manager.reload()
    await manager.setup(request())
    fake.calls.clear()
    await manager.setup(request())
    assert fake.commands() == [("portmap", "DEL"), ("bridge", "DEL"), ("bridge", "ADD"), ("portmap", "ADD")]


async def test_setup_checks_its_inputs(make: Callable[..., Any], dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist())
    manager, fake = make()
    await manager.reload()
    with pytest.raises(FailedPrecondition, match="'/elsewhere' is not a pinned network namespace"):
        await manager.setup(request(netns_path="/elsewhere"))
    with pytest.raises(InvalidArgument, match=r"kubernetes\.io/ingress-bandwidth"):
        await manager.setup(request(annotations={"kubernetes.io/ingress-bandwidth": "lots"}))
    assert fake.commands("ADD") == []
    assert cached(dirs) == []


async def test_reconcile_deletes_attachments_of_pods_that_are_gone(make: Callable[..., Any],
                                                                  dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist())
    manager, fake = make()
    await manager.reload()
    await manager.setup(request())
    await manager.setup(request(sandbox_id="6" * 64, port_mappings=(
        PortMapping(protocol="tcp", container_port=80, host_port=8081),)))
    assert set(manager.host_ports.held()) == {SID, "6" * 64}
    fake.calls.clear()
    assert await manager.reconcile({"6" * 64}) == []
    assert set(manager.host_ports.held()) == {"6" * 64}
    assert {c.env["CNI_CONTAINERID"] for c in fake.calls} == {SID}
    assert cached(dirs) == [f"net1-{'6' * 64}-eth0"]


async def test_gc_and_status_with_1_1_0_plugins(make: Callable[..., Any], dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist(version="1.1.0"))
    fake = FakePlugins(default_versions=("1.0.0", "1.1.0"))
    fake.fail("portmap", "STATUS", code=50, msg="no iptables")
    manager, _ = make(fake)
    await manager.reload()
    cond = manager.condition()
    assert not cond.status
    assert "reports not ready" in cond.message
    assert "no iptables" in cond.message
    await manager.setup(request())  # STATUS is informational: ADD is still tried
    fake.heal()
    await manager.reload()
    assert manager.condition().status
    fake.calls.clear()
    await manager.reconcile({SID})
    assert fake.commands() == [("bridge", "GC"), ("portmap", "GC")]
    assert fake.calls[0].conf["cni.dev/valid-attachments"] == [{"containerID": SID, "ifname": "eth0"}]


async def test_default_conflist_written_only_when_none_exists(make: Callable[..., Any],
                                                              dirs: dict[str, Path]) -> None:
    manager, _ = make(write_default_conflist=True, default_subnet="10.77.0.0/24", default_bridge="tb0")
    await manager.start()
    try:
        path = dirs["conf"] / defaults.FILE_NAME
        doc = json.loads(path.read_text())
        assert doc["plugins"][0]["bridge"] == "tb0"
        assert doc["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.77.0.0/24"}]]
        assert doc["plugins"][0]["ipam"]["dataDir"] == str(dirs["root"] / "cni" / "networks")
        assert manager.condition().status  # bridge, portmap and loopback are all in the bin dir
    finally:
        await manager.stop()


async def test_user_config_is_never_overwritten(make: Callable[..., Any], dirs: dict[str, Path]) -> None:
    (dirs["conf"] / "50-mine.conflist").write_text(conflist("mine"))
    manager, _ = make(write_default_conflist=True)
    await manager.start()
    await manager.update_pod_cidr("10.244.1.0/24")
    await manager.stop()
    assert sorted(p.name for p in dirs["conf"].iterdir()) == ["50-mine.conflist"]
    assert json.loads(manager.status_info()["cniconfig"])["podCIDR"] == "10.244.1.0/24"


async def test_pod_cidr_rewrites_crib_s_own_file_and_survives_a_restart(make: Callable[..., Any],
                                                                         dirs: dict[str, Path]) -> None:
    manager, _ = make(write_default_conflist=True)
    await manager.start()
    await manager.update_pod_cidr("10.244.1.0/24, fd44::/64")
    await manager.stop()
    path = dirs["conf"] / defaults.FILE_NAME
    ranges = json.loads(path.read_text())["plugins"][0]["ipam"]["ranges"]
    assert ranges == [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd44::/64"}]]
    again, _ = make(write_default_conflist=True)
    await again.start()
    await again.stop()
    assert json.loads(path.read_text())["plugins"][0]["ipam"]["ranges"] == ranges
    assert json.loads(again.status_info()["cniconfig"])["podCIDR"] == "10.244.1.0/24,fd44::/64"
    with pytest.raises(InvalidArgument, match=r"pod_cidr '10\.0\.0\.1/8'"):
        await again.update_pod_cidr("10.0.0.1/8")


async def test_an_unreadable_entry_is_reported_not_guessed(make: Callable[..., Any], dirs: dict[str, Path],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    (dirs["conf"] / "10-a.conflist").write_text(conflist())
    manager, fake = make()
    await manager.reload()
    results_dir = dirs["root"] / "cni" / "results"
    results_dir.mkdir(parents=True)
    (results_dir / f"net1-{SID}-eth0").write_text("{torn")
    with caplog.at_level("ERROR", logger="crib"):
        await manager.teardown(request())
    assert fake.commands("DEL") == []
    assert "unreadable CNI cache entry" in caplog.text
    assert cached(dirs) == [f"net1-{SID}-eth0"]  # left for a human: never silently deleted
