"""Plugin invocation and chain execution against the in-memory FakePlugins."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from crib.errors import DeadlineExceeded, FailedPrecondition
from crib.network import conf, invoke
from crib.network.cache import Attachment
from crib.network.chain import Chain, request_conf, supports
from crib.network.invoke import CNIPluginError, Outcome
from crib.testing.cni import FakePlugins

PLUGINS = ("bridge", "portmap", "loopback")


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    for name in (*PLUGINS, "firewall"):
        (d / name).write_text("#!/bin/false\n")
        (d / name).chmod(0o755)
    (d / "notexec").write_text("")
    return d


def conflist(version: str = "1.0.0", **top: object) -> conf.NetworkConfigList:
    doc = {"cniVersion": version, "name": "net1", **top, "plugins": [
        {"type": "bridge", "bridge": "br0", "extra": {"kept": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "loopback"},
    ]}
    return conf.parse(json.dumps(doc).encode(), "/x/net1.conflist")


ATT = Attachment(container_id="c" * 64, network_name="net1", ifname="eth0", netns="/run/ns/x",
                 cni_args=(("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web")),
                 capability_args={"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                                    "protocol": "tcp"}]})


def test_request_conf_inserts_version_name_runtime_config_and_drops_capabilities() -> None:
    plugin = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True,
              "runtimeConfig": {"stale": 1}, "prevResult": {"stale": 1}}
    out = request_conf(plugin, network="net1", version="1.0.0",
                       caps={"portMappings": [1], "bandwidth": {}}, prev_result={"cniVersion": "1.0.0"})
    assert out == {"type": "portmap", "snat": True, "cniVersion": "1.0.0", "name": "net1",
                   "runtimeConfig": {"portMappings": [1]}, "prevResult": {"cniVersion": "1.0.0"}}
    first = request_conf({"type": "bridge"}, network="n", version="0.4.0", caps={"portMappings": [1]},
                         prev_result=None)
    assert first == {"type": "bridge", "cniVersion": "0.4.0", "name": "n"}


@pytest.mark.parametrize(
    ("version", "command", "expected"),
    [("0.3.1", "CHECK", False), ("0.4.0", "CHECK", True), ("1.0.0", "GC", False), ("1.1.0", "GC", True),
     ("1.1.0", "STATUS", True), ("0.3.0", "ADD", True)],
    ids=["check-0.3.1", "check-0.4.0", "gc-1.0.0", "gc-1.1.0", "status-1.1.0", "add"],
)
def test_supports(version: str, command: str, expected: bool) -> None:
    assert supports(version, command) is expected


async def test_add_runs_in_order_chaining_prev_result(plugin_dir: Path) -> None:
    fake = FakePlugins()
    seen: list[dict[str, object]] = []

    async def progress(result: dict[str, object]) -> None:
        seen.append(result)

    result = await Chain(fake, [str(plugin_dir)], 5.0).add(conflist(), "1.0.0", ATT, progress)
    assert fake.commands() == [("bridge", "ADD"), ("portmap", "ADD"), ("loopback", "ADD")]
    first, second, third = (c.conf for c in fake.calls)
    assert "prevResult" not in first
    assert first["extra"] == {"kept": True}
    assert first["name"] == "net1"
    assert first["cniVersion"] == "1.0.0"
    assert "runtimeConfig" not in first
    assert second["runtimeConfig"] == {"portMappings": ATT.capability_args["portMappings"]}
    assert "capabilities" not in second
    assert second["prevResult"] == seen[0]
    assert third["prevResult"] == seen[1]
    assert len(seen) == 3
    assert result == seen[-1]
    env = fake.calls[0].env
    assert env["CNI_COMMAND"] == "ADD"
    assert env["CNI_CONTAINERID"] == "c" * 64
    assert env["CNI_NETNS"] == "/run/ns/x"
    assert env["CNI_IFNAME"] == "eth0"
    assert env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=web"
    assert env["CNI_PATH"] == str(plugin_dir)
    assert env["PATH"]


async def test_add_stops_at_the_first_failure(plugin_dir: Path) -> None:
    fake = FakePlugins()
    fake.fail("portmap", "ADD", code=11, msg="try later", details="iptables locked", stderr="lock held")
    with pytest.raises(CNIPluginError) as info:
        await Chain(fake, [str(plugin_dir)], 5.0).add(conflist(), "1.0.0", ATT)
    assert fake.commands() == [("bridge", "ADD"), ("portmap", "ADD")]
    err = info.value
    assert (err.plugin, err.command, err.code, err.msg, err.details) == ("portmap", "ADD", 11, "try later",
                                                                          "iptables locked")
    assert str(err) == ("CNI plugin portmap failed ADD for network 'net1' (code 11, try again later): "
                        "try later: iptables locked [stderr: lock held]")


async def test_delete_runs_in_reverse_with_the_cached_result(plugin_dir: Path) -> None:
    fake = FakePlugins()
    cached = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]}
    att = dataclasses.replace(ATT, netns="", result=cached)
    await Chain(fake, [str(plugin_dir)], 5.0).delete(conflist(), "1.0.0", att)
    assert fake.commands() == [("loopback", "DEL"), ("portmap", "DEL"), ("bridge", "DEL")]
    assert all(c.conf["prevResult"] == cached for c in fake.calls)
    assert fake.calls[1].conf["runtimeConfig"]["portMappings"]  # portmap DEL needs the mappings to find rules
    assert fake.calls[0].env["CNI_NETNS"] == ""


async def test_delete_without_result_sends_no_prev_result(plugin_dir: Path) -> None:
    fake = FakePlugins()
    await Chain(fake, [str(plugin_dir)], 5.0).delete(conflist(), "1.0.0", ATT)
    assert all("prevResult" not in c.conf for c in fake.calls)


async def test_missing_plugin_is_a_failed_precondition_naming_dirs(plugin_dir: Path) -> None:
    doc = json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "notexec"}]}).encode()
    with pytest.raises(FailedPrecondition, match=r"plugin 'notexec' of network 'n' is not in .*bin; install"):
        await Chain(FakePlugins(), [str(plugin_dir)], 5.0).add(conf.parse(doc, "x.conflist"), "1.0.0", ATT)


async def test_check_rules(plugin_dir: Path) -> None:
    fake = FakePlugins()
    chain = Chain(fake, [str(plugin_dir)], 5.0)
    done = Attachment(container_id="c", network_name="net1", ifname="eth0", result={"cniVersion": "1.0.0"})
    await chain.check(conflist(), "1.0.0", done)
    assert fake.commands() == [("bridge", "CHECK"), ("portmap", "CHECK"), ("loopback", "CHECK")]
    fake.calls.clear()
    await chain.check(conflist(disableCheck=True), "1.0.0", done)
    await chain.check(conflist("0.3.1"), "0.3.1", done)
    await chain.check(conflist(), "1.0.0", ATT)  # no result: nothing to check against
    assert fake.calls == []


async def test_gc_continues_past_errors_and_lists_valid_attachments(plugin_dir: Path) -> None:
    fake = FakePlugins()
    fake.fail("bridge", "GC", msg="gc failed")
    errors = await Chain(fake, [str(plugin_dir)], 5.0).gc(conflist("1.1.0"), "1.1.0", [("c1", "eth0")])
    assert fake.commands() == [("bridge", "GC"), ("portmap", "GC"), ("loopback", "GC")]
    assert len(errors) == 1
    assert "gc failed" in str(errors[0])
    assert fake.calls[1].conf["cni.dev/valid-attachments"] == [{"containerID": "c1", "ifname": "eth0"}]
    assert set(fake.calls[1].env) == {"CNI_COMMAND", "CNI_PATH", "PATH"}
    fake.calls.clear()
    assert await Chain(fake, [str(plugin_dir)], 5.0).gc(conflist("1.1.0", disableGC=True), "1.1.0", []) == []
    assert await Chain(fake, [str(plugin_dir)], 5.0).gc(conflist(), "1.0.0", []) == []
    assert fake.calls == []


async def test_status_only_for_1_1_0(plugin_dir: Path) -> None:
    fake = FakePlugins()
    chain = Chain(fake, [str(plugin_dir)], 5.0)
    await chain.status(conflist(), "1.0.0")
    assert fake.calls == []
    fake.fail("portmap", "STATUS", code=50, msg="iptables missing")
    with pytest.raises(CNIPluginError, match=r"code 50, plugin not available\): iptables missing"):
        await chain.status(conflist("1.1.0"), "1.1.0")


@pytest.mark.parametrize(
    ("outcome", "needle"),
    [
        (Outcome(returncode=1, stdout=b"", stderr=b"panic: boom"), "network 'n' [stderr: panic: boom]"),
        (Outcome(returncode=2, stdout=b"", stderr=b""), ": exited with status 2 and printed nothing"),
        (Outcome(returncode=1, stdout=b"plain text error", stderr=b""), ": plain text error"),
        (Outcome(returncode=1, stdout=b'{"code": 999, "msg": "own"}', stderr=b""), "(code 999): own"),
        (Outcome(returncode=0, stdout=b"not json", stderr=b""), "printed no JSON result: not json"),
        (Outcome(returncode=0, stdout=b"[]", stderr=b""), "printed a JSON list, not an object"),
    ],
    ids=["stderr-only", "silent", "text-stdout", "plugin-code", "add-not-json", "add-not-object"],
)
async def test_invoke_errors(outcome: Outcome, needle: str) -> None:
    class Fixed:
        async def exec(self, path: str, **kw: object) -> Outcome:
            return outcome

    with pytest.raises(CNIPluginError) as info:
        await invoke.invoke(Fixed(), "/bin/bridge", command="ADD", env={}, conf={}, network="n", timeout=1)  # type: ignore[arg-type]
    assert needle in str(info.value)


async def test_timeout_names_the_plugin_and_the_knob(plugin_dir: Path) -> None:
    fake = FakePlugins()
    fake.timeouts.add(("bridge", "ADD"))
    with pytest.raises(DeadlineExceeded, match=r"bridge did not finish ADD for network 'net1' within 5s.*"
                                                r"network.plugin_timeout"):
        await Chain(fake, [str(plugin_dir)], 5.0).add(conflist(), "1.0.0", ATT)


async def test_version_probe() -> None:
    fake = FakePlugins(versions={"bridge": ("0.4.0", "1.0.0")})
    assert await invoke.plugin_versions(fake, "/x/bridge", timeout=1) == ("0.4.0", "1.0.0")
    assert fake.calls[0].env == {"CNI_COMMAND": "VERSION", "PATH": fake.calls[0].env["PATH"]}


def test_environment_per_command() -> None:
    add = invoke.environment("ADD", plugin_dirs=["/a", "/b"], container_id="c", netns="/ns", ifname="eth0",
                             args=[("K", "V")])
    assert add["CNI_PATH"] == "/a:/b"
    assert add["CNI_ARGS"] == "K=V"
    assert "CNI_CONTAINERID" not in invoke.environment("STATUS", plugin_dirs=["/a"])
