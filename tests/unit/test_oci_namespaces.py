"""Namespaces for every NamespaceMode of the pod and the container, and user-namespace refusals."""

from __future__ import annotations

from typing import Any

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import build_container_spec, build_infra_spec, check_user_namespace
from crib.state.records import IDMap
from tests.unit.test_oci_inputs import (
    CONTAINER,
    NODE,
    POD,
    TARGET,
    assert_runc_valid,
    container_config,
    container_inputs,
    infra_inputs,
    pod_config,
    sandbox_info,
)

NET = {"type": "network", "path": "/run/crib/netns/sb0123"}
IPC = {"type": "ipc", "path": "/run/crib/ipcns/sb0123"}
UTS = {"type": "uts", "path": "/run/crib/utsns/sb0123"}
MNT = {"type": "mount"}
POD_PID = {"type": "pid", "path": "/proc/4242/ns/pid"}
TARGET_PID = {"type": "pid", "path": "/proc/777/ns/pid"}
NEW_PID = {"type": "pid"}


def _spec(*, own_pid: int, pod: dict[str, int], **overrides: Any) -> dict[str, Any]:
    options = api.NamespaceOption(pid=own_pid, target_id="tgt")
    sc = api.LinuxContainerSecurityContext(namespace_options=options)
    overrides.setdefault("target_pid_ns", "/proc/777/ns/pid")
    inputs = container_inputs(container_config(sc=sc), sandbox_config=pod_config(**pod), **overrides)
    spec = build_container_spec(inputs)
    assert_runc_valid(spec)
    return spec


# (id, container pid mode, pod modes, expected namespaces)
CASES: list[tuple[str, int, dict[str, int], list[dict[str, str]]]] = [
    ("all-pod", POD, {}, [POD_PID, IPC, UTS, MNT, NET]),
    ("own-pid", CONTAINER, {"pid": CONTAINER}, [NEW_PID, IPC, UTS, MNT, NET]),
    ("own-pid-in-shared-pod", CONTAINER, {}, [NEW_PID, IPC, UTS, MNT, NET]),
    ("target-pid", TARGET, {"pid": CONTAINER}, [TARGET_PID, IPC, UTS, MNT, NET]),
    ("host-pid", NODE, {"pid": NODE}, [IPC, UTS, MNT, NET]),
    ("pod-pid-in-host-pid-pod", POD, {"pid": NODE}, [IPC, UTS, MNT, NET]),
    ("host-network-keeps-host-uts", CONTAINER, {"network": NODE, "pid": CONTAINER}, [NEW_PID, IPC, MNT]),
    ("host-ipc", CONTAINER, {"ipc": NODE, "pid": CONTAINER}, [NEW_PID, UTS, MNT, NET]),
    ("all-host", NODE, {"network": NODE, "ipc": NODE, "pid": NODE}, [MNT]),
]


@pytest.mark.parametrize(("own_pid", "pod", "expected"), [row[1:] for row in CASES],
                         ids=[row[0] for row in CASES])
def test_container_namespaces(own_pid: int, pod: dict[str, int], expected: list[dict[str, str]]) -> None:
    assert _spec(own_pid=own_pid, pod=pod)["linux"]["namespaces"] == expected


def test_container_network_mode_is_the_pods() -> None:
    # kubelet sends a container its pod's network mode; no container leaves or joins the host network alone.
    sc = api.LinuxContainerSecurityContext(namespace_options=api.NamespaceOption(network=NODE, ipc=NODE))
    spec = build_container_spec(container_inputs(container_config(sc=sc)))
    assert NET in spec["linux"]["namespaces"]
    assert IPC in spec["linux"]["namespaces"]


@pytest.mark.parametrize(("cgroup_v2", "privileged", "has_cgroupns"), [
    (False, False, False), (True, False, True), (True, True, False),
], ids=["v1", "v2", "v2-privileged"])
def test_cgroup_namespace(cgroup_v2: bool, privileged: bool, has_cgroupns: bool) -> None:
    from tests.unit.test_oci_inputs import host_facts
    sc = api.LinuxContainerSecurityContext(privileged=privileged)
    inputs = container_inputs(container_config(sc=sc), sandbox_config=pod_config(privileged=True),
                              host=host_facts(cgroup_v2=cgroup_v2))
    spec = build_container_spec(inputs)
    assert ({"type": "cgroup"} in spec["linux"]["namespaces"]) is has_cgroupns


@pytest.mark.parametrize(("own_pid", "pod", "overrides", "message"), [
    (POD, {"pid": CONTAINER}, {}, "pid mode POD needs a pod that shares its PID namespace"),
    (NODE, {}, {}, "pid mode NODE needs a pod created with the host PID namespace"),
    (TARGET, {}, {"target_pid_ns": ""},
     r"pid mode TARGET needs a running target container \(target_id 'tgt'\)"),
    (9, {}, {}, "pid mode 9"),
], ids=["pod-without-shared-pid", "node-in-normal-pod", "target-not-running", "unknown-mode"])
def test_invalid_pid_modes(own_pid: int, pod: dict[str, int], overrides: dict[str, Any],
                           message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        _spec(own_pid=own_pid, pod=pod, **overrides)


@pytest.mark.parametrize("missing", ["netns_path", "ipcns_path", "utsns_path", "pidns_path"])
def test_missing_namespace_path_is_a_caller_bug(missing: str) -> None:
    with pytest.raises(ValueError, match="namespace path is missing"):
        _spec(own_pid=POD, pod={}, sandbox=sandbox_info(**{missing: ""}))


def test_host_modes_need_no_paths() -> None:
    sandbox = sandbox_info(netns_path="", ipcns_path="", utsns_path="", pidns_path="")
    spec = _spec(own_pid=NODE, pod={"network": NODE, "ipc": NODE, "pid": NODE}, sandbox=sandbox)
    assert spec["linux"]["namespaces"] == [MNT]


def _userns(mode: int) -> api.NamespaceOption:
    return api.NamespaceOption(userns_options=api.UserNamespace(
        mode=mode, uids=[api.IDMapping(host_id=1000, container_id=0, length=65536)]))


USERNS_POD = sandbox_info(userns_path="/run/crib/userns/sb0123",
                          uid_mappings=(IDMap(container_id=0, host_id=100000, length=65536),),
                          gid_mappings=(IDMap(container_id=0, host_id=200000, length=65536),))


@pytest.mark.parametrize(("mode", "pod_has_userns", "message"), [
    (NODE, False, None), (POD, True, None),
    (POD, False, "mode POD, but the pod was created without"), (NODE, True, "mode NODE, but the pod has"),
    (CONTAINER, True, "mode CONTAINER is invalid"), (TARGET, False, "mode TARGET is invalid"),
], ids=["node", "pod", "pod-without", "node-in-userns-pod", "container", "target"])
def test_container_user_namespace_must_agree_with_the_pod(mode: int, pod_has_userns: bool,
                                                          message: str | None) -> None:
    options = _userns(mode)
    sandbox = USERNS_POD if pod_has_userns else sandbox_info()
    sc = api.LinuxContainerSecurityContext(namespace_options=options)
    inputs = container_inputs(container_config(sc=sc), sandbox=sandbox)
    if message is None:
        check_user_namespace(options, pod_has_userns=pod_has_userns, what="container 'app'")
        build_container_spec(inputs)
        return
    with pytest.raises(InvalidArgument, match=f"container 'app': userns_options {message}"):
        check_user_namespace(options, pod_has_userns=pod_has_userns, what="container 'app'")
    with pytest.raises(InvalidArgument, match="container 'app'"):
        build_container_spec(inputs)


def test_user_namespaced_pod_is_joined_with_its_maps() -> None:
    spec = build_container_spec(container_inputs(sandbox=USERNS_POD))
    assert_runc_valid(spec)
    linux = spec["linux"]
    assert {"type": "user", "path": "/run/crib/userns/sb0123"} in linux["namespaces"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 200000, "size": 65536}]
    plain = build_container_spec(container_inputs())["linux"]
    assert "uidMappings" not in plain
    assert "user" not in {ns["type"] for ns in plain["namespaces"]}


def test_infra_joins_the_pod_user_namespace() -> None:
    spec = build_infra_spec(infra_inputs(sandbox=USERNS_POD))
    assert spec["linux"]["namespaces"][1] == {"type": "user", "path": "/run/crib/userns/sb0123"}
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]


def test_no_userns_options_is_fine() -> None:
    check_user_namespace(api.NamespaceOption(), pod_has_userns=True, what="pod 'p'")
