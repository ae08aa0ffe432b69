"""Plugins' adjustments merged with ownership and applied to an OCI spec; updates; CDI; conversions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crib._proto.nri.v1alpha1 import api_pb2 as api
from crib.errors import PluginError
from crib.nri import convert
from crib.nri.adjust import Owners, SpecAdjuster, Updates
from crib.nri.cdi import CdiRegistry
from crib.state.records import ContainerRecord, Phase


def _spec() -> dict[str, Any]:
    return {
        "process": {
            "args": ["sleep", "1"],
            "env": ["PATH=/bin", "KEEP=1", "DROP=1"],
            "user": {"uid": 0, "gid": 0},
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind"]},
        ],
        "annotations": {"keep": "1", "drop": "1"},
        "linux": {
            "resources": {"memory": {"limit": 1 << 30}, "devices": [{"allow": False, "access": "rwm"}]},
            "cgroupsPath": "/crib/pod/crib-c1",
            "namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}],
        },
    }


def _adjuster(tmp_path: Path, spec: dict[str, Any] | None = None) -> SpecAdjuster:
    return SpecAdjuster("c1", spec or _spec(), Owners(), CdiRegistry([str(tmp_path)]))


def test_one_plugin_adjusts_every_supported_field(tmp_path: Path) -> None:
    a = _adjuster(tmp_path)
    adj = api.ContainerAdjustment(
        annotations={"new": "v", "-drop": ""},
        mounts=[
            api.Mount(destination="/extra/deep", source="/srv/x", options=["ro"]),
            api.Mount(destination="-/data"),
        ],
        env=[api.KeyValue(key="NEW", value="2"), api.KeyValue(key="-DROP")],
        hooks=api.Hooks(
            prestart=[api.Hook(path="/bin/true", args=["true"], timeout=api.OptionalInt(value=5))]
        ),
        rlimits=[api.POSIXRlimit(type="RLIMIT_NOFILE", hard=4096, soft=1024)],
        linux=api.LinuxContainerAdjustment(
            devices=[
                api.LinuxDevice(
                    path="/dev/fuse",
                    type="c",
                    major=10,
                    minor=229,
                    file_mode=api.OptionalFileMode(value=0o666),
                )
            ],
            resources=api.LinuxResources(
                memory=api.LinuxMemory(limit=api.OptionalInt64(value=1 << 28)),
                cpu=api.LinuxCPU(shares=api.OptionalUInt64(value=512), cpus="0"),
                unified={"memory.high": "100M"},
                pids=api.LinuxPids(limit=64),
            ),
            cgroups_path="/elsewhere/c1",
            oom_score_adj=api.OptionalInt(value=500),
            seccomp_policy=api.LinuxSeccomp(
                default_action="SCMP_ACT_ALLOW",
                syscalls=[
                    api.LinuxSyscall(
                        names=["mkdir"], action="SCMP_ACT_ERRNO", errno_ret=api.OptionalUInt32(value=1)
                    )
                ],
            ),
            namespaces=[api.LinuxNamespace(type="-network"), api.LinuxNamespace(type="cgroup")],
            sysctl={"net.core.somaxconn": "1024"},
        ),
        args=["sh", "-c", "true"],
    )
    a.apply("10-a", adj)
    spec = a.finish()
    p, linux = spec["process"], spec["linux"]
    assert spec["annotations"] == {"keep": "1", "new": "v"}
    assert [m["destination"] for m in spec["mounts"]] == ["/proc", "/extra/deep"]  # parents first
    assert spec["mounts"][1] == {
        "destination": "/extra/deep",
        "type": "bind",
        "source": "/srv/x",
        "options": ["ro"],
    }
    assert p["env"] == ["PATH=/bin", "KEEP=1", "NEW=2"]
    assert p["args"] == ["sh", "-c", "true"]
    assert spec["hooks"] == {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024}]
    assert p["oomScoreAdj"] == 500
    assert linux["devices"] == [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666}
    ]
    assert {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"} in linux["resources"][
        "devices"
    ]
    assert linux["resources"]["memory"] == {"limit": 1 << 28}
    assert linux["resources"]["cpu"] == {"shares": 512, "cpus": "0"}
    assert linux["resources"]["unified"] == {"memory.high": "100M"}
    assert linux["resources"]["pids"] == {"limit": 64}
    assert linux["cgroupsPath"] == "/elsewhere/c1"
    assert linux["seccomp"] == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    assert linux["namespaces"] == [{"type": "pid"}, {"type": "cgroup"}]
    assert linux["sysctl"] == {"net.core.somaxconn": "1024"}


@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        (
            api.ContainerAdjustment(annotations={"k": "1"}),
            api.ContainerAdjustment(annotations={"k": "2"}),
            "annotation",
        ),
        (
            api.ContainerAdjustment(env=[api.KeyValue(key="E", value="1")]),
            api.ContainerAdjustment(env=[api.KeyValue(key="E", value="2")]),
            "env",
        ),
        (
            api.ContainerAdjustment(mounts=[api.Mount(destination="/m", source="/a")]),
            api.ContainerAdjustment(mounts=[api.Mount(destination="/m", source="/b")]),
            "mount",
        ),
        (
            api.ContainerAdjustment(
                linux=api.LinuxContainerAdjustment(
                    resources=api.LinuxResources(memory=api.LinuxMemory(limit=api.OptionalInt64(value=1)))
                ),
            ),
            api.ContainerAdjustment(
                linux=api.LinuxContainerAdjustment(
                    resources=api.LinuxResources(memory=api.LinuxMemory(limit=api.OptionalInt64(value=2)))
                )
            ),
            "resources",
        ),
        (
            api.ContainerAdjustment(linux=api.LinuxContainerAdjustment(cgroups_path="/a")),
            api.ContainerAdjustment(linux=api.LinuxContainerAdjustment(cgroups_path="/b")),
            "cgroups path",
        ),
        (
            api.ContainerAdjustment(annotations={"-k": ""}),
            api.ContainerAdjustment(annotations={"k": "2"}),
            "annotation",
        ),
    ],
    ids=["annotation", "env", "mount", "memory", "cgroups-path", "set-after-removal"],
)
def test_two_plugins_setting_the_same_value_conflict(
    tmp_path: Path, first: Any, second: Any, what: str
) -> None:
    a = _adjuster(tmp_path)
    a.apply("10-first", first)
    with pytest.raises(PluginError, match=f"'10-first' and '20-second' both tried to set {what}"):
        a.apply("20-second", second)


def test_no_conflict_for_a_plugins_own_value_or_hooks(tmp_path: Path) -> None:
    a = _adjuster(tmp_path)
    a.apply("10-a", api.ContainerAdjustment(annotations={"-k": ""}))
    a.apply("10-a", api.ContainerAdjustment(annotations={"k": "again"}))  # the remover may set it again
    hook = api.Hooks(poststop=[api.Hook(path="/bin/true")])
    a.apply("10-a", api.ContainerAdjustment(hooks=hook))
    a.apply("20-b", api.ContainerAdjustment(hooks=hook))  # hooks accumulate
    assert a.finish()["hooks"] == {"poststop": [{"path": "/bin/true"}, {"path": "/bin/true"}]}


@pytest.mark.parametrize(
    "adj",
    [
        api.ContainerAdjustment(linux=api.LinuxContainerAdjustment(rdt=api.LinuxRdt(remove=True))),
        api.ContainerAdjustment(
            linux=api.LinuxContainerAdjustment(
                resources=api.LinuxResources(blockio_class=api.OptionalString(value="gold"))
            )
        ),
        api.ContainerAdjustment(
            linux=api.LinuxContainerAdjustment(net_devices={"eth1": api.LinuxNetDevice(name="x")})
        ),
        api.ContainerAdjustment(
            linux=api.LinuxContainerAdjustment(
                io_priority=api.LinuxIOPriority(priority=4, **{"class": api.IOPRIO_CLASS_BE})
            )
        ),
    ],
    ids=["rdt", "blockio-class", "net-devices", "io-priority"],
)
def test_unsupported_adjustments_are_refused_with_the_plugin_name(tmp_path: Path, adj: Any) -> None:
    with pytest.raises(PluginError, match=r"'10-a' asked to set .* cannot apply"):
        _adjuster(tmp_path).apply("10-a", adj)


def test_cdi_devices_are_resolved_from_specs(tmp_path: Path) -> None:
    (tmp_path / "vendor.json").write_text(
        json.dumps(
            {
                "cdiVersion": "0.6.0",
                "kind": "example.com/gpu",
                "containerEdits": {"env": ["VENDOR=1"]},
                "devices": [
                    {
                        "name": "g0",
                        "containerEdits": {
                            "env": ["GPU=0"],
                            "deviceNodes": [{"path": "/dev/gpu0", "hostPath": "/dev/null"}],
                            "mounts": [
                                {"hostPath": "/srv/lib", "containerPath": "/usr/lib/gpu", "options": ["ro"]}
                            ],
                            "hooks": [{"hookName": "createContainer", "path": "/bin/true"}],
                        },
                    }
                ],
            }
        )
    )
    a = _adjuster(tmp_path)
    a.apply("10-a", api.ContainerAdjustment(CDI_devices=[api.CDIDevice(name="example.com/gpu=g0")]))
    spec = a.finish()
    assert spec["process"]["env"][-2:] == ["VENDOR=1", "GPU=0"]
    assert {"path": "/dev/gpu0", "type": "c", "major": 1, "minor": 3} in spec["linux"]["devices"]
    assert {
        "destination": "/usr/lib/gpu",
        "type": "bind",
        "source": "/srv/lib",
        "options": ["ro", "bind"],
    } in spec["mounts"]
    assert spec["hooks"]["createContainer"] == [{"path": "/bin/true"}]
    b = _adjuster(tmp_path)
    b.apply("10-a", api.ContainerAdjustment(CDI_devices=[api.CDIDevice(name="example.com/gpu=nope")]))
    with pytest.raises(PluginError, match="not declared by any CDI spec"):
        b.finish()


def _update(cid: str, limit: int, *, ignore: bool = False) -> api.ContainerUpdate:
    return api.ContainerUpdate(
        container_id=cid,
        ignore_failure=ignore,
        linux=api.LinuxContainerUpdate(
            resources=api.LinuxResources(memory=api.LinuxMemory(limit=api.OptionalInt64(value=limit)))
        ),
    )


def test_updates_merge_per_container_and_conflict_across_plugins() -> None:
    u = Updates(Owners(), updating="me")
    u.resources["me"] = {"cpu": {"shares": 2}}
    u.add(
        "10-a",
        [_update("me", 100), _update("other", 7, ignore=True)],
        [api.ContainerEviction(container_id="victim", reason="too big")],
    )
    assert u.resources["me"] == {"cpu": {"shares": 2}, "memory": {"limit": 100}}
    assert u.others() == {"other": {"memory": {"limit": 7}}}
    assert u.ignore_failure["other"] is True
    assert u.evictions == {"victim": "evicted by NRI plugin 10-a: too big"}
    with pytest.raises(PluginError, match=r"'10-a' and '20-b' both tried to set resources 'memory\.limit'"):
        u.add("20-b", [_update("other", 8)])


def test_updating_the_container_being_created_is_refused() -> None:
    with pytest.raises(PluginError, match="while it is being created"):
        Updates(Owners(), creating="new").add("10-a", [_update("new", 1)])


def test_container_message_from_a_record_and_its_spec() -> None:
    rec = ContainerRecord(
        id="c1",
        name="n",
        sandbox_id="p1",
        meta_name="web",
        phase=Phase.CREATED,
        started_at=5,
        labels={"l": "1"},
        image="busybox",
        image_ref="busybox@sha256:aa",
        image_id="sha256:bb",
    )
    msg = convert.container(rec, _spec())
    assert (msg.name, msg.state, msg.pod_sandbox_id, msg.started_at) == (
        "web",
        api.CONTAINER_RUNNING,
        "p1",
        5,
    )
    assert (msg.image.digest, msg.image.config_digest) == ("sha256:aa", "sha256:bb")
    assert list(msg.args) == ["sleep", "1"]
    assert [m.destination for m in msg.mounts] == ["/proc", "/data"]
    assert msg.linux.resources.memory.limit.value == 1 << 30
    assert msg.linux.cgroups_path == "/crib/pod/crib-c1"
    assert not msg.linux.HasField("oom_score_adj")


def test_resources_round_trip() -> None:
    oci = {
        "memory": {"limit": 10, "swap": 20},
        "cpu": {"shares": 3, "quota": 4, "period": 5, "cpus": "0-1"},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 6}],
        "unified": {"a": "b"},
        "pids": {"limit": 9},
    }
    back: dict[str, Any] = {}
    changed = convert.apply_resources(back, convert.resources_to_nri(oci))
    assert back == oci
    assert {"memory.limit", "pids.limit"} <= set(changed)
