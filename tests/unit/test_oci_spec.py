"""The whole document: what runc requires, annotations, cgroups path, purity, and the infra spec."""

from __future__ import annotations

import json
from typing import Any

import pytest

import crib.oci.annotations as ann
from crib._proto.runtime.v1 import api_pb2 as api
from crib.oci import DEFAULT_MASKED_PATHS, build_container_spec, build_infra_spec, cgroups_path
from crib.oci.defaults import OCI_VERSION
from crib.state.records import ImageConfig
from tests.unit.test_oci_inputs import (
    CONTAINER,
    NODE,
    POD,
    assert_runc_valid,
    char_device,
    container_config,
    container_inputs,
    host_facts,
    infra_inputs,
    pod_config,
    sandbox_info,
)


def _kubelet_like_config() -> api.ContainerConfig:
    """Roughly what kubelet sends for a plain Deployment container."""
    sc = api.LinuxContainerSecurityContext(
        run_as_user=api.Int64Value(value=33), supplemental_groups=[2000],
        capabilities=api.Capability(drop_capabilities=["ALL"], add_capabilities=["NET_BIND_SERVICE"]),
        namespace_options=api.NamespaceOption(pid=CONTAINER),
        seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault),
        apparmor=api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault),
        masked_paths=list(DEFAULT_MASKED_PATHS), readonly_paths=["/proc/sys"], no_new_privs=True,
        readonly_rootfs=True)
    return container_config(
        name="nginx", command=(), args=["-g", "daemon off;"], sc=sc,
        resources=api.LinuxContainerResources(cpu_period=100000, cpu_quota=20000, cpu_shares=204,
                                              memory_limit_in_bytes=128 << 20, oom_score_adj=-997),
        envs=[api.KeyValue(key="KUBERNETES_SERVICE_HOST", value=b"10.96.0.1")],
        mounts=[api.Mount(container_path="/etc/hosts", host_path="/var/lib/kubelet/pods/u/etc-hosts"),
                api.Mount(container_path="/dev/termination-log", host_path="/var/lib/kubelet/pods/u/c/term"),
                api.Mount(container_path="/var/run/secrets/kubernetes.io/serviceaccount",
                          host_path="/var/lib/kubelet/pods/u/volumes/token", readonly=True)],
        labels={"io.kubernetes.container.name": "nginx"},
        annotations={"io.kubernetes.container.hash": "abc", ann.CONTAINER_TYPE: "spoofed"},
        log_path="nginx/0.log")


VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("crictl-minimal", {}),
    ("kubelet-like", {"config": _kubelet_like_config(),
                      "image": ImageConfig(entrypoint=("/docker-entrypoint.sh",), cmd=("nginx",),
                                           env=("NGINX_VERSION=1.25",), working_dir="/usr/share/nginx")}),
    ("privileged", {"config": container_config(sc=api.LinuxContainerSecurityContext(privileged=True)),
                    "sandbox_config": pod_config(privileged=True),
                    "host": host_facts(host_devices=(char_device("/dev/kmsg", 1, 11),))}),
    ("host-everything", {"config": container_config(sc=api.LinuxContainerSecurityContext(
        namespace_options=api.NamespaceOption(pid=NODE))),
        "sandbox_config": pod_config(network=NODE, ipc=NODE, pid=NODE),
        "sandbox": sandbox_info(netns_path="", ipcns_path="", utsns_path="", pidns_path="",
                                shm_path="/dev/shm")}),
    ("tty-v2", {"config": container_config(tty=True, stdin=True), "host": host_facts(cgroup_v2=True)}),
]


@pytest.mark.parametrize("overrides", [v for _, v in VARIANTS], ids=[k for k, _ in VARIANTS])
def test_runc_required_fields(overrides: dict[str, Any]) -> None:
    config = overrides.pop("config", None)
    spec = build_container_spec(container_inputs(config, **overrides))
    assert_runc_valid(spec)
    assert list(spec) == ["ociVersion", "process", "root", "mounts", "annotations", "linux"]
    assert spec["ociVersion"] == OCI_VERSION
    assert spec["root"]["path"] == "/run/crib/containers/c0ffee/rootfs"


def test_kubelet_like_container() -> None:
    image = ImageConfig(entrypoint=("/docker-entrypoint.sh",), cmd=("nginx",), env=("NGINX_VERSION=1.25",),
                        working_dir="/usr/share/nginx")
    spec = build_container_spec(container_inputs(_kubelet_like_config(), image=image,
                                                 host=host_facts(oom_score_adj_min=0)))
    process = spec["process"]
    assert process["args"] == ["/docker-entrypoint.sh", "-g", "daemon off;"]
    assert process["cwd"] == "/usr/share/nginx"
    assert process["user"] == {"uid": 33, "gid": 33, "additionalGids": [10, 33, 2000]}
    assert process["capabilities"]["bounding"] == ["CAP_NET_BIND_SERVICE"]
    assert process["noNewPrivileges"] is True
    assert process["oomScoreAdj"] == 0
    assert process["env"][-2:] == ["NGINX_VERSION=1.25", "KUBERNETES_SERVICE_HOST=10.96.0.1"]
    assert spec["root"]["readonly"] is True
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/etc/hosts"]["source"] == "/var/lib/kubelet/pods/u/etc-hosts"
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"]["options"][-1] == "ro"
    assert [m["destination"] for m in spec["mounts"]][-1] == "/var/run/secrets/kubernetes.io/serviceaccount"
    linux = spec["linux"]
    assert linux["readonlyPaths"] == ["/proc/sys"]
    assert linux["resources"]["cpu"] == {"shares": 204, "quota": 20000, "period": 100000}
    assert "seccomp" in linux


def test_annotations() -> None:
    inputs = container_inputs(_kubelet_like_config(), image_name="docker.io/library/nginx:1")
    spec = build_container_spec(inputs)
    assert spec["annotations"] == {
        "io.kubernetes.container.hash": "abc",
        ann.CONTAINER_TYPE: ann.CONTAINER_TYPE_CONTAINER,
        ann.CONTAINER_NAME: "nginx",
        ann.IMAGE_NAME: "docker.io/library/nginx:1",
        ann.SANDBOX_ID: "sb0123",
        ann.SANDBOX_NAME: "web-pod",
        ann.SANDBOX_NAMESPACE: "default",
        ann.SANDBOX_UID: "pod-uid-1",
    }
    assert list(spec["annotations"]) == sorted(spec["annotations"])


@pytest.mark.parametrize(("image", "expected"), [
    (api.ImageSpec(image="sha256:abc", user_specified_image="busybox:1"), "busybox:1"),
    (api.ImageSpec(image="busybox:1"), "busybox:1"),
], ids=["user-specified", "image"])
def test_image_name_annotation_defaults(image: api.ImageSpec, expected: str) -> None:
    config = container_config()
    config.image.CopyFrom(image)
    assert build_container_spec(container_inputs(config))["annotations"][ann.IMAGE_NAME] == expected


@pytest.mark.parametrize(("parent", "expected"), [
    ("/kubepods/podabc", "/kubepods/podabc/crib-c0ffee"),
    ("/kubepods/", "/kubepods/crib-c0ffee"),
    ("/", "/crib-c0ffee"),
], ids=["pod", "trailing-slash", "root"])
def test_cgroups_path(parent: str, expected: str) -> None:
    assert cgroups_path(parent, "c0ffee") == expected
    spec = build_container_spec(container_inputs(sandbox=sandbox_info(cgroup_parent=parent)))
    assert spec["linux"]["cgroupsPath"] == expected


@pytest.mark.parametrize("parent", ["", "kubepods.slice", "kubepods-burstable.slice:crio:abc"],
                         ids=["empty", "systemd-slice", "systemd-triple"])
def test_cgroups_path_needs_a_cgroupfs_parent(parent: str) -> None:
    with pytest.raises(ValueError, match="not an absolute cgroupfs path"):
        cgroups_path(parent, "c0ffee")


def test_builder_is_pure() -> None:
    config = _kubelet_like_config()
    before = config.SerializeToString(deterministic=True)
    first = json.dumps(build_container_spec(container_inputs(config)), sort_keys=True)
    second = json.dumps(build_container_spec(container_inputs(config)), sort_keys=True)
    assert first == second
    assert config.SerializeToString(deterministic=True) == before


def test_specs_do_not_share_mutable_state() -> None:
    one = build_container_spec(container_inputs())
    one["mounts"][0]["options"].append("changed")
    one["linux"]["maskedPaths"].append("/changed")
    one["linux"]["resources"]["devices"].append({"allow": True, "access": "rwm"})
    two = build_container_spec(container_inputs())
    assert "changed" not in two["mounts"][0]["options"]
    assert "/changed" not in two["linux"]["maskedPaths"]
    assert {"allow": True, "access": "rwm"} not in two["linux"]["resources"]["devices"]


def test_infra_spec() -> None:
    inputs = infra_inputs(host=host_facts(oom_score_adj_min=0), sysctls={"net.ipv4.ip_forward": "1"})
    spec = build_infra_spec(inputs)
    assert_runc_valid(spec)
    process = spec["process"]
    assert process["args"] == ["/catatonit", "-P"]
    assert process["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert all(caps == [] for caps in process["capabilities"].values())
    assert process["noNewPrivileges"] is True
    assert process["oomScoreAdj"] == 0
    assert spec["root"] == {"path": "/run/crib/sandboxes/sb0123/infra", "readonly": True}
    assert [m["destination"] for m in spec["mounts"]] == ["/proc", "/dev"]
    linux = spec["linux"]
    assert linux["namespaces"] == [
        {"type": "pid"}, {"type": "ipc", "path": "/run/crib/ipcns/sb0123"},
        {"type": "uts", "path": "/run/crib/utsns/sb0123"}, {"type": "mount"},
        {"type": "network", "path": "/run/crib/netns/sb0123"}]
    assert linux["cgroupsPath"] == "/kubepods/podpod-uid-1/crib-sb0123"
    assert linux["resources"]["cpu"] == {"shares": 2}
    assert linux["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert spec["annotations"] == {
        ann.CONTAINER_TYPE: ann.CONTAINER_TYPE_SANDBOX, ann.SANDBOX_ID: "sb0123", ann.SANDBOX_NAME: "web-pod",
        ann.SANDBOX_NAMESPACE: "default", ann.SANDBOX_UID: "pod-uid-1",
        ann.SANDBOX_LOG_DIRECTORY: "/var/log/pods/default_web-pod_pod-uid-1"}


def test_infra_spec_host_modes() -> None:
    spec = build_infra_spec(infra_inputs(sandbox_config=pod_config(network=NODE, ipc=NODE),
                                         sandbox=sandbox_info(netns_path="", ipcns_path="", utsns_path=""),
                                         args=("/usr/bin/catatonit", "-P"), oom_score_adj=-998))
    assert spec["linux"]["namespaces"] == [{"type": "pid"}, {"type": "mount"}]
    assert spec["process"]["args"] == ["/usr/bin/catatonit", "-P"]
    assert spec["process"]["oomScoreAdj"] == -998
    assert "sysctl" not in spec["linux"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"sandbox_config": pod_config(pid=NODE)}, "node's PID namespace has no infra process"),
    ({"sandbox": sandbox_info(netns_path="")}, "network namespace path is missing"),
    ({"args": ()}, "infra args"),
    ({"sandbox": sandbox_info(cgroup_parent="pods.slice")}, "cgroupfs"),
], ids=["host-pid-pod", "missing-netns", "no-args", "systemd-parent"])
def test_infra_spec_caller_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_infra_spec(infra_inputs(**overrides))


@pytest.mark.parametrize(("patterns", "kept"), [
    (("*",), {"io.kubernetes.container.hash", "dev.gvisor.spec.mount.data.share"}),
    ((), set()),
    (("dev.gvisor.spec.*",), {"dev.gvisor.spec.mount.data.share"}),
    (("io.kubernetes.container.hash",), {"io.kubernetes.container.hash"}),
], ids=["all", "none", "prefix", "exact"])
def test_allowed_annotations(patterns: tuple[str, ...], kept: set[str]) -> None:
    config = _kubelet_like_config()
    config.annotations["dev.gvisor.spec.mount.data.share"] = "pod"
    spec = build_container_spec(container_inputs(config, allowed_annotations=patterns))
    own = {k for k in spec["annotations"] if k in ann.RESERVED}
    assert set(spec["annotations"]) - own == kept
    assert spec["annotations"][ann.CONTAINER_TYPE] == ann.CONTAINER_TYPE_CONTAINER  # never filtered out


def test_sandboxed_handler_spec() -> None:
    """gVisor: the hostname in the spec, no capability its kernel does not know, a PID namespace each."""
    config = container_config(sc=api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=["ALL"]),
        namespace_options=api.NamespaceOption(pid=POD)))
    caps = host_facts().capabilities
    sandboxed = build_container_spec(container_inputs(config, sandboxed=True))
    assert sandboxed["hostname"] == "web-pod"
    assert "CAP_PERFMON" not in sandboxed["process"]["capabilities"]["bounding"]
    assert "CAP_AUDIT_READ" in sandboxed["process"]["capabilities"]["bounding"]
    assert {"type": "pid"} in sandboxed["linux"]["namespaces"]
    plain = build_container_spec(container_inputs(config))
    assert "CAP_PERFMON" in caps
    assert "hostname" not in plain
    assert {"type": "pid", "path": "/proc/4242/ns/pid"} in plain["linux"]["namespaces"]
    assert "CAP_PERFMON" in plain["process"]["capabilities"]["bounding"]
    infra = build_infra_spec(infra_inputs(sandboxed=True, sandbox_config=pod_config(pid=CONTAINER)))
    assert infra["hostname"] == "web-pod"
