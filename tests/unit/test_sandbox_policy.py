"""Pure rules of pod set-up: namespace modes, sysctls, cgroup parents, pod files."""

from __future__ import annotations

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.sandbox import files, policy


def test_unset_namespace_modes_mean_pod_as_in_the_proto() -> None:
    for option in (None, api.NamespaceOption()):
        ns = policy.namespaces(option)
        assert (ns.network, ns.pid, ns.ipc) == ("pod", "pod", "pod")


@pytest.mark.parametrize(("option", "expected"), [
    (api.NamespaceOption(network=api.NODE), ("node", "pod", "pod")),
    (api.NamespaceOption(pid=api.CONTAINER), ("pod", "container", "pod")),
    (api.NamespaceOption(ipc=api.NODE, pid=api.NODE), ("pod", "node", "node")),
], ids=["host-network", "container-pid", "host-ipc-and-pid"])
def test_namespace_modes(option: api.NamespaceOption, expected: tuple[str, str, str]) -> None:
    ns = policy.namespaces(option)
    assert (ns.network, ns.pid, ns.ipc) == expected


@pytest.mark.parametrize("option", [api.NamespaceOption(network=api.CONTAINER),
                                    api.NamespaceOption(ipc=api.TARGET),
                                    api.NamespaceOption(pid=api.TARGET)],
                         ids=["network-container", "ipc-target", "pid-target"])
def test_impossible_pod_namespace_modes_are_refused(option: api.NamespaceOption) -> None:
    with pytest.raises(InvalidArgument):
        policy.namespaces(option)


@pytest.mark.parametrize(("name", "kind"), [
    ("kernel.shm_rmid_forced", "ipc"), ("kernel.msgmax", "ipc"), ("kernel.sem", "ipc"),
    ("fs.mqueue.msg_max", "ipc"), ("net.ipv4.ip_forward", "net"),
    ("net/ipv4/conf/eth0.100/forwarding", "net"),
    ("kernel.pid_max", ""), ("vm.swappiness", ""), ("kernel.hostname", ""),
], ids=lambda v: str(v))
def test_sysctl_kinds(name: str, kind: str) -> None:
    assert policy.sysctl_kind(name) == kind


def test_node_wide_sysctl_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidArgument, match="not namespaced"):
        policy.check_sysctls({"vm.swappiness": "10"}, policy.namespaces(None))


@pytest.mark.parametrize(("sysctl", "option"), [
    ("net.ipv4.ip_forward", api.NamespaceOption(network=api.NODE)),
    ("kernel.shmmax", api.NamespaceOption(ipc=api.NODE)),
], ids=["net-on-host-network", "ipc-on-host-ipc"])
def test_sysctl_of_a_shared_host_namespace_is_refused(sysctl: str, option: api.NamespaceOption) -> None:
    with pytest.raises(InvalidArgument, match="host"):
        policy.check_sysctls({sysctl: "1"}, policy.namespaces(option))


def test_namespaced_sysctls_pass() -> None:
    wanted = {"kernel.shm_rmid_forced": "1", "net.ipv4.ip_unprivileged_port_start": "0"}
    assert policy.check_sysctls(wanted, policy.namespaces(None)) == wanted


@pytest.mark.parametrize(("requested", "expected"), [
    ("", "/crib/abc"), ("/kubepods/pod1", "/kubepods/pod1"), ("/kubepods/pod1/", "/kubepods/pod1"),
], ids=["default", "given", "trailing-slash"])
def test_cgroup_parent(requested: str, expected: str) -> None:
    assert policy.cgroup_parent(requested, driver="cgroupfs", default_parent="/crib",
                                sandbox_id="abc") == expected


@pytest.mark.parametrize(("requested", "message"), [
    ("kubepods-besteffort.slice", "systemd slice"),
    ("/kubepods.slice/kubepods-pod1.slice", "systemd slice"),
    ("relative/path", "absolute"),
    ("/a/../b", "absolute"),
], ids=["slice", "nested-slice", "relative", "dotdot"])
def test_bad_cgroup_parents_are_refused(requested: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        policy.cgroup_parent(requested, driver="cgroupfs", default_parent="/crib", sandbox_id="abc")


def test_resolv_conf_from_dns_config() -> None:
    text = files.resolv_conf(["10.0.0.10", "10.0.0.11"], ["ns.svc.cluster.local", "svc.cluster.local"],
                             ["ndots:5"])
    assert text == ("nameserver 10.0.0.10\nnameserver 10.0.0.11\n"
                    "search ns.svc.cluster.local svc.cluster.local\noptions ndots:5\n")


def test_hosts_maps_the_pod_ips_to_its_hostname() -> None:
    text = files.hosts("web-0", ["10.88.0.5"])
    assert "127.0.0.1\tlocalhost\n" in text
    assert text.endswith("10.88.0.5\tweb-0\n")


def _userns(mode: int = api.POD, uids: list[tuple[int, int, int]] | None = None,
            gids: list[tuple[int, int, int]] | None = None, **modes: int) -> api.NamespaceOption:
    def maps(items: list[tuple[int, int, int]]) -> list[api.IDMapping]:
        return [api.IDMapping(container_id=c, host_id=h, length=n) for c, h, n in items]
    default = [(0, 100000, 65536)]
    return api.NamespaceOption(userns_options=api.UserNamespace(
        mode=mode, uids=maps(default if uids is None else uids),
        gids=maps(default if gids is None else gids)), **modes)


def test_user_namespace_of_a_pod() -> None:
    option = _userns(gids=[(0, 300000, 1000)])
    got = policy.user_namespace(option, policy.namespaces(option))
    assert got is not None
    assert got.root == (100000, 300000)
    assert policy.map_text(got.uids) == "0 100000 65536\n"
    assert policy.host_id(got.gids, 999) == 300999
    with pytest.raises(ValueError, match="not mapped"):
        policy.host_id(got.gids, 1000)


@pytest.mark.parametrize("option", [None, api.NamespaceOption(), _userns(mode=api.NODE, uids=[], gids=[])],
                         ids=["none", "unset", "node"])
def test_no_user_namespace(option: api.NamespaceOption | None) -> None:
    assert policy.user_namespace(option, policy.namespaces(option)) is None


@pytest.mark.parametrize(("option", "message"), [
    (_userns(uids=[(0, 1000, 100000), (0, 2000, 100000)]), "uids must hold exactly one mapping"),
    (_userns(gids=[]), "gids must hold exactly one mapping"),
    (_userns(uids=[(1, 1000, 100000)]), "container id 0 \\(the pod's root\\) must be mapped"),
    (_userns(gids=[(0, 0, 65536)]), "host id 0, the node's root"),
    (_userns(uids=[(0, 1000, 0)]), "length 0"),
    (_userns(uids=[(0, 2**32 - 10, 100)]), "goes past"),
    (_userns(mode=api.CONTAINER), "mode CONTAINER is not valid"),
    (_userns(mode=api.TARGET), "mode TARGET is not valid"),
    (_userns(mode=api.NODE), "mode NODE takes no uids/gids"),
    (_userns(network=api.NODE), "cannot use the host network namespace"),
    (_userns(ipc=api.NODE, pid=api.NODE), "host IPC and PID namespace"),
], ids=["two-mappings", "no-gid-mapping", "root-unmapped", "host-root", "empty", "overflow", "container",
        "target", "node-with-maps", "host-network", "host-ipc-pid"])
def test_user_namespace_refusals(option: api.NamespaceOption, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        policy.user_namespace(option, policy.namespaces(option))
