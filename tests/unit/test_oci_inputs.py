"""Factories for the spec builder's inputs (used by every test_oci_* module), and the checks runc makes.

`assert_runc_valid` encodes what runc 1.1 requires of a config.json before it does anything (libcontainer's
specconv and config validator): it is independent of `runc spec` and of the host.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.oci import ALL_CAPABILITIES, ContainerInputs, HostDevice, HostFacts, InfraInputs, SandboxInfo
from crib.state.records import ImageConfig

POD, CONTAINER, NODE, TARGET = (api.NamespaceMode.POD, api.NamespaceMode.CONTAINER, api.NamespaceMode.NODE,
                                api.NamespaceMode.TARGET)

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
www:x:33:33:www-data:/var/www:/bin/sh
default-user:x:1000:1000::/home/default-user:/bin/sh
broken line
"""

GROUP = """\
root:x:0:
daemon:x:1:
wheel:x:10:root,www
www:x:33:
default-user:x:1000:
group-defined-in-image:x:50000:default-user
nogroup:x:65534:
"""


def host_facts(**overrides: Any) -> HostFacts:
    """A host like the test machine, with every capability (override what a test needs)."""
    fields: dict[str, Any] = {
        "arch": "amd64", "capabilities": frozenset(ALL_CAPABILITIES), "apparmor_enabled": False,
        "seccomp_enabled": True, "rro_supported": True, "oom_score_adj_min": -1000, "cgroup_v2": False,
    }
    fields.update(overrides)
    return HostFacts(**fields)


def pod_config(*, network: int = POD, pid: int = POD, ipc: int = POD, privileged: bool = False,
               userns: api.UserNamespace | None = None) -> api.PodSandboxConfig:
    ns = api.NamespaceOption(network=network, pid=pid, ipc=ipc)
    if userns is not None:
        ns.userns_options.CopyFrom(userns)
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="web-pod", namespace="default", uid="pod-uid-1", attempt=0),
        hostname="web-pod",
        log_directory="/var/log/pods/default_web-pod_pod-uid-1",
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent="/kubepods/podpod-uid-1",
            security_context=api.LinuxSandboxSecurityContext(namespace_options=ns, privileged=privileged),
        ),
    )


def sandbox_info(**overrides: Any) -> SandboxInfo:
    fields: dict[str, Any] = {
        "sandbox_id": "sb0123", "hostname": "web-pod", "cgroup_parent": "/kubepods/podpod-uid-1",
        "netns_path": "/run/crib/netns/sb0123", "ipcns_path": "/run/crib/ipcns/sb0123",
        "utsns_path": "/run/crib/utsns/sb0123", "pidns_path": "/proc/4242/ns/pid",
        "hostname_path": "/run/crib/sandboxes/sb0123/hostname",
        "hosts_path": "/run/crib/sandboxes/sb0123/hosts",
        "resolv_conf_path": "/run/crib/sandboxes/sb0123/resolv.conf",
        "shm_path": "/run/crib/sandboxes/sb0123/shm",
    }
    fields.update(overrides)
    return SandboxInfo(**fields)


def container_config(
    *, name: str = "app", command: tuple[str, ...] = ("sleep", "60"),
    sc: api.LinuxContainerSecurityContext | None = None, resources: api.LinuxContainerResources | None = None,
    **fields: Any,
) -> api.ContainerConfig:
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name=name, attempt=0),
                                 image=api.ImageSpec(image="registry.test/busybox:1"), command=list(command),
                                 **fields)
    if sc is not None:
        config.linux.security_context.CopyFrom(sc)
    if resources is not None:
        config.linux.resources.CopyFrom(resources)
    return config


def container_inputs(config: api.ContainerConfig | None = None, **overrides: Any) -> ContainerInputs:
    fields: dict[str, Any] = {
        "container_id": "c0ffee", "config": config if config is not None else container_config(),
        "sandbox_config": pod_config(), "sandbox": sandbox_info(), "image": ImageConfig(),
        "rootfs_path": "/run/crib/containers/c0ffee/rootfs", "host": host_facts(), "passwd": PASSWD,
        "group": GROUP,
    }
    fields.update(overrides)
    return ContainerInputs(**fields)


def infra_inputs(**overrides: Any) -> InfraInputs:
    fields: dict[str, Any] = {"sandbox_config": pod_config(), "sandbox": sandbox_info(),
                              "rootfs_path": "/run/crib/sandboxes/sb0123/infra", "host": host_facts()}
    fields.update(overrides)
    return InfraInputs(**fields)


def char_device(path: str, major: int, minor: int) -> HostDevice:
    return HostDevice(path=path, type="c", major=major, minor=minor, file_mode=0o660, uid=0, gid=5)


_NAMESPACES = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"}


def assert_runc_valid(spec: dict[str, Any]) -> None:
    """What runc 1.1 checks before creating a container, plus JSON-serializability."""
    assert json.loads(json.dumps(spec)) == spec
    assert spec["ociVersion"].startswith("1.0.")
    process = spec["process"]
    assert process["args"]
    assert all(isinstance(a, str) for a in process["args"])
    assert process["args"][0]
    assert posixpath.isabs(process["cwd"])
    assert all("=" in e for e in process["env"])
    assert isinstance(process["user"]["uid"], int)
    assert isinstance(process["user"]["gid"], int)
    assert all(0 <= g < 2**31 for g in process["user"].get("additionalGids", []))
    for caps in process.get("capabilities", {}).values():
        assert set(caps) <= set(ALL_CAPABILITIES)
    assert spec["root"]["path"]
    for mount in spec["mounts"]:
        assert posixpath.isabs(mount["destination"]), mount
        assert mount["type"], mount
        assert mount["source"], mount
        if mount["type"] == "bind":
            assert posixpath.isabs(mount["source"]), mount
            assert "rbind" in mount["options"], mount
    linux = spec["linux"]
    types = [ns["type"] for ns in linux["namespaces"]]
    assert len(types) == len(set(types))
    assert set(types) <= _NAMESPACES
    assert "mount" in types
    for ns in linux["namespaces"]:
        assert "path" not in ns or posixpath.isabs(ns["path"])
    assert posixpath.isabs(linux["cgroupsPath"])
    assert linux["resources"]["devices"]
    for device in linux.get("devices", []):
        assert device["type"] in ("c", "b")
        assert posixpath.isabs(device["path"])
    if "sysctl" in linux:
        assert "network" in types or "ipc" in types
    if "uts" not in types:
        assert "hostname" not in spec


def test_inputs_are_frozen() -> None:
    inputs = container_inputs()
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.container_id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.host.cgroup_v2 = True  # type: ignore[misc]


def test_default_localhost_loader_refuses() -> None:
    from crib.errors import InvalidArgument
    with pytest.raises(InvalidArgument, match="no profile loader"):
        container_inputs().load_localhost("/var/lib/kubelet/seccomp/x.json")
