"""config.json for runc: a pod's containers and its PID-namespace infra process.

build_container_spec() turns a CreateContainer request (the CRI ContainerConfig and PodSandboxConfig, read
as they are), the image's config and the facts the caller gathered into the OCI runtime-spec document runc
1.1 runs. It is a pure function: the same inputs give the same document, nothing on the host is read or
changed, and a request that cannot be honoured raises a CribError naming the container and the field to fix
before anything was created. The rules of each part live in their own module (process, user, security,
seccomp, mounts, devices, namespaces, resources); this module puts the document together.
"""

from __future__ import annotations

from typing import Any

import crib.oci.annotations as ann
from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import defaults
from crib.oci.devices import container_devices
from crib.oci.inputs import ContainerInputs, HostFacts, InfraInputs, Rlimit, SandboxInfo
from crib.oci.mounts import container_mounts
from crib.oci.namespaces import check_user_namespace, container_namespaces, id_mappings, infra_namespaces
from crib.oci.process import exec_process, process_args, process_env, working_dir
from crib.oci.resources import check_oom_score_adj, clamp_oom_score_adj, linux_resources
from crib.oci.seccomp import container_seccomp
from crib.oci.security import apparmor_profile, capabilities, masked_and_readonly_paths
from crib.oci.user import resolve_container_user


def cgroups_path(parent: str, object_id: str) -> str:
    """linux.cgroupsPath of a container or infra process: "<parent>/crib-<id>" (cgroupfs driver).

    Raises:
        ValueError: parent is not an absolute cgroupfs path (the sandbox code refuses others earlier).
    """
    if not parent.startswith("/"):
        raise ValueError(f"cgroup parent {parent!r} is not an absolute cgroupfs path")
    return f"{parent.rstrip('/')}/crib-{object_id}"


def _rlimits(limits: tuple[Rlimit, ...]) -> list[dict[str, Any]]:
    return [{"type": r.type, "hard": r.hard, "soft": r.soft} for r in limits]


def _pids(host: HostFacts) -> dict[str, Any]:
    return {"pids": {"limit": host.pids_limit}} if host.pids_limit > 0 else {}


def _hostname(sandboxed: bool, sandbox: SandboxInfo) -> dict[str, str]:
    """runc joins the pod's UTS namespace, where the hostname is already set; a sandbox kernel (gVisor)
    ignores that namespace and takes the hostname from the spec (only with the pod's own UTS namespace)."""
    return {"hostname": sandbox.hostname} if sandboxed and sandbox.utsns_path else {}


def _pod_annotations(config: api.PodSandboxConfig, sandbox_id: str) -> dict[str, str]:
    return {
        ann.SANDBOX_ID: sandbox_id,
        ann.SANDBOX_NAME: config.metadata.name,
        ann.SANDBOX_NAMESPACE: config.metadata.namespace,
        ann.SANDBOX_UID: config.metadata.uid,
    }


def build_container_spec(inputs: ContainerInputs) -> dict[str, Any]:
    """The config.json document of a container.

    Returns:
        A JSON-ready dict (ociVersion, process, root, mounts, annotations, linux).

    Raises:
        InvalidArgument: the request cannot be honoured as given; the message names the container and
            the field (no command, unknown user, unknown capability, bad mount or device, AppArmor asked
            for on a host without it, a privileged container in a non-privileged pod, ...).
        ValueError: the caller's inputs break their contract (a missing namespace path or volume dir).
    """
    config, host, sandbox = inputs.config, inputs.host, inputs.sandbox
    container = config.metadata.name or inputs.container_id
    sc = config.linux.security_context
    pod_sc = inputs.sandbox_config.linux.security_context
    privileged = sc.privileged
    if privileged and not pod_sc.privileged:
        raise InvalidArgument(f"container {container!r}: privileged containers need a privileged pod; set "
                              "privileged in the pod's security context too")
    check_user_namespace(sc.namespace_options, pod_has_userns=bool(sandbox.userns_path),
                         what=f"container {container!r}")

    user = resolve_container_user(sc, container=container, image_user=inputs.image.user,
                                  passwd=inputs.passwd, group=inputs.group)
    available = host.capabilities
    if inputs.sandboxed:
        available = available & set(defaults.SANDBOX_CAPABILITIES)
    caps = capabilities(sc.capabilities, container=container, privileged=privileged, available=available)
    process: dict[str, Any] = {
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
        "args": process_args(config, inputs.image, container=container),
        "env": process_env(config, inputs.image, hostname=sandbox.hostname, container=container),
        "cwd": working_dir(config, inputs.image, container=container),
        "capabilities": caps,
        "noNewPrivileges": sc.no_new_privs,
    }
    if host.rlimits:
        process["rlimits"] = _rlimits(host.rlimits)
    profile = apparmor_profile(sc, container=container, privileged=privileged, enabled=host.apparmor_enabled,
                               default_profile=host.apparmor_default_profile, loaded=host.apparmor_profiles)
    if profile:
        process["apparmorProfile"] = profile
    if config.linux.HasField("resources"):
        requested = check_oom_score_adj(config.linux.resources.oom_score_adj, container=container)
        process["oomScoreAdj"] = clamp_oom_score_adj(requested, host.oom_score_adj_min)

    mounts, root_propagation = container_mounts(
        config=config, container=container, sandbox=sandbox, image=inputs.image,
        volume_dirs=inputs.volume_dirs, privileged=privileged, readonly_rootfs=sc.readonly_rootfs,
        rro_supported=host.rro_supported, mount_sources=inputs.mount_sources)
    nodes, device_rules = container_devices(config, container=container, device_nodes=inputs.device_nodes,
                                            privileged=privileged, host_devices=host.host_devices)
    masked, readonly = masked_and_readonly_paths(sc, container=container, privileged=privileged)
    resources: dict[str, Any] = {"devices": device_rules}
    resources.update(linux_resources(config.linux.resources, container=container, host=host))
    resources.update(_pids(host))
    linux: dict[str, Any] = {
        "resources": resources,
        "cgroupsPath": cgroups_path(sandbox.cgroup_parent, inputs.container_id),
        "namespaces": container_namespaces(
            pod=inputs.sandbox_config.linux.security_context.namespace_options, own=sc.namespace_options,
            sandbox=sandbox, target_pid_ns=inputs.target_pid_ns, container=container,
            cgroup_v2=host.cgroup_v2, privileged=privileged, sandboxed=inputs.sandboxed),
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    }
    linux.update(id_mappings(sandbox))
    if nodes:
        linux["devices"] = nodes
    seccomp = container_seccomp(sc, container=container, privileged=privileged, capabilities=caps["bounding"],
                                arch=host.arch, seccomp_enabled=host.seccomp_enabled,
                                load_localhost=inputs.load_localhost)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    if root_propagation:
        linux["rootfsPropagation"] = root_propagation

    annotations = ann.allowed(config.annotations, inputs.allowed_annotations)
    annotations.update(_pod_annotations(inputs.sandbox_config, sandbox.sandbox_id))
    annotations.update({
        ann.CONTAINER_TYPE: ann.CONTAINER_TYPE_CONTAINER,
        ann.CONTAINER_NAME: config.metadata.name,
        ann.IMAGE_NAME: inputs.image_name or config.image.user_specified_image or config.image.image,
    })
    return {
        "ociVersion": defaults.OCI_VERSION,
        "process": process,
        **_hostname(inputs.sandboxed, sandbox),
        "root": {"path": inputs.rootfs_path, "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "annotations": dict(sorted(annotations.items())),
        "linux": linux,
    }


def build_infra_spec(inputs: InfraInputs) -> dict[str, Any]:
    """The config.json of the infra process that holds a pod's shared PID namespace.

    The process (catatonit -P: it sleeps and reaps, never exits on its own) runs as root with no
    capabilities, no_new_privs and a read-only root, creates the PID namespace and joins the pod's pinned
    network, IPC and UTS namespaces by path (or stays in the host's, for host-mode pods).

    Raises:
        ValueError: the pod does not share a PID namespace, a namespace path is missing, the cgroup parent
            is not absolute, or args is empty.
    """
    if not inputs.args:
        raise ValueError("infra args must name the program to run")
    sandbox, pod = inputs.sandbox, inputs.sandbox_config
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": 0, "gid": 0, "additionalGids": [0]},
        "args": list(inputs.args),
        "env": ["PATH=" + defaults.DEFAULT_PATH],
        "cwd": "/",
        "capabilities": {key: [] for key in ("bounding", "effective", "permitted", "inheritable", "ambient")},
        "noNewPrivileges": True,
        "oomScoreAdj": clamp_oom_score_adj(inputs.oom_score_adj, inputs.host.oom_score_adj_min),
    }
    if inputs.host.rlimits:
        process["rlimits"] = _rlimits(inputs.host.rlimits)
    mounts = [m for m in defaults.default_mounts() if m["destination"] in ("/proc", "/dev")]
    resources: dict[str, Any] = {"devices": defaults.default_device_rules(),
                                 "cpu": {"shares": inputs.cpu_shares}}
    resources.update(_pids(inputs.host))
    linux: dict[str, Any] = {
        "resources": resources,
        "cgroupsPath": cgroups_path(sandbox.cgroup_parent, sandbox.sandbox_id),
        "namespaces": infra_namespaces(pod=pod.linux.security_context.namespace_options, sandbox=sandbox),
        "maskedPaths": list(defaults.DEFAULT_MASKED_PATHS),
        "readonlyPaths": list(defaults.DEFAULT_READONLY_PATHS),
    }
    linux.update(id_mappings(sandbox))
    if inputs.sysctls:
        linux["sysctl"] = dict(sorted(inputs.sysctls.items()))
    annotations = ann.allowed(pod.annotations, inputs.allowed_annotations)
    annotations.update(_pod_annotations(pod, sandbox.sandbox_id))
    annotations[ann.CONTAINER_TYPE] = ann.CONTAINER_TYPE_SANDBOX
    annotations[ann.SANDBOX_LOG_DIRECTORY] = pod.log_directory
    return {
        "ociVersion": defaults.OCI_VERSION,
        "process": process,
        **_hostname(inputs.sandboxed, sandbox),
        "root": {"path": inputs.rootfs_path, "readonly": True},
        "mounts": mounts,
        "annotations": dict(sorted(annotations.items())),
        "linux": linux,
    }


__all__ = ["build_container_spec", "build_infra_spec", "cgroups_path", "exec_process"]
