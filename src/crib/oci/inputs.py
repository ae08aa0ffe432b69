"""What the spec builder is given: the CRI messages as they came, plus facts only the caller can know.

The builder never looks at the host. Whatever needs a syscall, a file read or a stat (the kernel's features,
the daemon's capabilities, the image's /etc/passwd, a device node's major/minor, the pod's namespace files)
is found out by the caller and handed in through these frozen dataclasses. That keeps every rule of the
builder a pure function of its inputs, testable with plain values, and lets the lifecycle code decide how and
when to probe the host (once at start-up for HostFacts, per container for the rest).

Paths in these records are host paths unless a field says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.state.records import IDMap, ImageConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class HostDevice:
    """A device node as the caller found it on the host (from os.stat).

    Attributes:
        path: the node's host path, e.g. "/dev/fuse".
        type: "c" (character) or "b" (block).
        major: major number (os.major(st.st_rdev)).
        minor: minor number (os.minor(st.st_rdev)).
        file_mode: permission bits of the node (st.st_mode & 0o7777); runc creates the node with them.
        uid: owner of the node.
        gid: group of the node.
    """

    path: str
    type: str
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Rlimit:
    """One process resource limit, e.g. Rlimit(type="RLIMIT_NOFILE", soft=1024, hard=4096)."""

    type: str
    soft: int
    hard: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    """Facts about the node and crib's node-wide policy, probed once by the caller.

    Attributes:
        arch: the machine, as GOARCH ("amd64", "arm64") or uname ("x86_64", "aarch64"); picks the seccomp
            architectures.
        capabilities: capability names ("CAP_CHOWN", ...) the daemon itself holds (its permitted set). runc
            cannot grant more: "ALL", privileged containers and explicit adds are limited to these. On a host
            without CAP_SYS_RESOURCE, for instance, that capability is missing here.
        apparmor_enabled: the kernel enforces AppArmor (/sys/module/apparmor/parameters/enabled is "Y").
        seccomp_enabled: the kernel supports seccomp filters.
        rro_supported: the OCI runtime supports recursive read-only mounts ("rro" in `runc features`
            mountOptions and a kernel >= 5.12).
        oom_score_adj_min: the lowest oom_score_adj the daemon may give (its own value when it lacks
            CAP_SYS_RESOURCE, else -1000). Lower requests are raised to it, as containerd's
            restrict_oom_score_adj does.
        cgroup_v2: the unified hierarchy is mounted on /sys/fs/cgroup.
        swap_controller: memory+swap limits are available (memory.memsw.* on v1, memory.swap.max on v2).
        hugetlb_controller: the hugetlb controller is available; without it hugepage limits are skipped.
        apparmor_default_profile: name of the loaded profile used for RuntimeDefault; "" = none applied.
        apparmor_profiles: names of the loaded AppArmor profiles, to refuse an unknown Localhost profile
            early; None = do not check.
        host_devices: every device node under the host's /dev, for privileged containers (the caller skips
            /dev/pts, /dev/shm, /dev/mqueue and /dev/fd, as other runtimes do).
        rlimits: limits set on every container process; empty = inherit the daemon's (containerd's CRI
            plugin does the same). See defaults.default_rlimits.
        pids_limit: crib's per-container pids limit; 0 = none.
    """

    arch: str
    capabilities: frozenset[str]
    apparmor_enabled: bool
    seccomp_enabled: bool
    rro_supported: bool
    oom_score_adj_min: int
    cgroup_v2: bool
    swap_controller: bool = False
    hugetlb_controller: bool = False
    apparmor_default_profile: str = ""
    apparmor_profiles: frozenset[str] | None = None
    host_devices: tuple[HostDevice, ...] = ()
    rlimits: tuple[Rlimit, ...] = ()
    pids_limit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxInfo:
    """What the sandbox code set up for the pod and the builder joins or mounts.

    The pod's namespace *modes* are read from PodSandboxConfig; this record carries the resulting paths.

    Attributes:
        sandbox_id: the pod sandbox id.
        hostname: the pod's effective hostname (PodSandboxConfig.hostname, or the node's name for a
            host-network pod); becomes $HOSTNAME.
        cgroup_parent: absolute cgroupfs path under which container cgroups go ("/kubepods/pod<uid>").
        netns_path: pinned network namespace; required unless the pod uses the host network.
        ipcns_path: pinned IPC namespace; required unless the pod uses the host IPC namespace.
        utsns_path: pinned UTS namespace; required unless the pod uses the host network.
        pidns_path: the infra process's PID namespace ("/proc/<pid>/ns/pid"); required when the pod
            shares one PID namespace (pid mode POD).
        hostname_path, hosts_path, resolv_conf_path: the pod's files, bind-mounted on /etc/hostname,
            /etc/hosts and /etc/resolv.conf unless a CRI mount covers them; "" = not mounted.
        shm_path: what is bind-mounted on /dev/shm: the pod's shm mount, or "/dev/shm" for a host-IPC pod;
            "" = a private tmpfs per container.
        userns_path: the pod's pinned user namespace (it owns the network, IPC and UTS ones); "" = the
            node's. Containers join it by path.
        uid_mappings, gid_mappings: its maps (runc 1.1 needs them even when it joins by path, to know the
            host ids of the container's root).
    """

    sandbox_id: str
    hostname: str
    cgroup_parent: str
    netns_path: str = ""
    ipcns_path: str = ""
    utsns_path: str = ""
    pidns_path: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    resolv_conf_path: str = ""
    shm_path: str = ""
    userns_path: str = ""
    uid_mappings: tuple[IDMap, ...] = ()
    gid_mappings: tuple[IDMap, ...] = ()


def refuse_localhost(ref: str) -> dict[str, Any]:
    """The default `load_localhost`: a caller that loads no profiles refuses Localhost seccomp ones."""
    raise InvalidArgument(f"seccomp Localhost profile {ref!r} cannot be loaded: no profile loader configured")


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerInputs:
    """Everything build_container_spec needs for one container.

    Attributes:
        container_id: crib's id of the container (names the cgroup).
        config: the CreateContainer request's ContainerConfig, read as it is (never modified).
        sandbox_config: the pod's PodSandboxConfig, as the pod was created with it.
        sandbox: paths the sandbox code created for the pod.
        image: the image's runtime config (ENTRYPOINT, CMD, ENV, USER, WORKDIR, VOLUME).
        image_name: the image as the client named it, for the annotation; "" = config.image.
        rootfs_path: the mounted root filesystem (absolute, or relative to the bundle directory).
        passwd: the image's /etc/passwd text ("" if it has none).
        group: the image's /etc/group text ("" if it has none).
        volume_dirs: image VOLUME path -> host directory the caller created for it; needed for every
            path of mounts.image_volumes_needed().
        mount_sources: index in config.mounts -> the host path to bind instead, for the mounts the caller
            prepares: image volumes (Mount.image: the image mounted read-only, image_sub_path already
            resolved inside it) and ID-mapped volumes (mounts.idmapped_mounts()).
        device_nodes: CRI Device.host_path -> the node(s) found there (a directory gives every device
            node under it, with HostDevice.path under that directory). A missing key means the path
            does not exist and is reported as the request's error.
        target_pid_ns: PID namespace of the target container ("/proc/<pid>/ns/pid") when the container's
            pid mode is TARGET.
        host: node facts.
        load_localhost: reads a Localhost seccomp profile (the localhost_ref path) into a dict; raises a
            CribError (NotFound/InvalidArgument) naming the file when it cannot.
        allowed_annotations: which of the container's CRI annotations go into the spec (the handler's
            allowed_annotations: keys, or prefixes ending in "*").
        sandboxed: the handler is a sandbox runtime (gVisor): the spec names the pod's hostname (the sandbox
            has its own kernel and reads it from there) and grants only the capabilities such a kernel
            knows (defaults.SANDBOX_CAPABILITIES).
    """

    container_id: str
    config: api.ContainerConfig
    sandbox_config: api.PodSandboxConfig
    sandbox: SandboxInfo
    image: ImageConfig
    rootfs_path: str
    host: HostFacts
    image_name: str = ""
    passwd: str = ""
    group: str = ""
    volume_dirs: Mapping[str, str] = field(default_factory=dict)
    mount_sources: Mapping[int, str] = field(default_factory=dict)
    device_nodes: Mapping[str, tuple[HostDevice, ...]] = field(default_factory=dict)
    target_pid_ns: str = ""
    load_localhost: Callable[[str], dict[str, Any]] = refuse_localhost
    allowed_annotations: tuple[str, ...] = ("*",)
    sandboxed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class InfraInputs:
    """What build_infra_spec needs for the PID-namespace holder of a pod that shares one PID namespace.

    Attributes:
        sandbox_config: the pod's PodSandboxConfig.
        sandbox: the pod's namespace paths (pidns_path is ignored: the infra creates the PID namespace).
        rootfs_path: the minimal root filesystem holding the infra binary.
        host: node facts.
        args: the infra command inside that root filesystem.
        sysctls: sysctls runc applies in the joined namespaces; {} = none (the sandbox code usually
            applies the pod's sysctls itself).
        oom_score_adj: kubelet gives the pod's infra (pause) -998 so it is the last thing OOM-killed;
            clamped to HostFacts.oom_score_adj_min.
        cpu_shares: the infra's CPU weight (2, like the pause container).
        allowed_annotations: which of the pod's CRI annotations go into the spec (a sandboxed runtime such
            as gVisor reads its pod-wide settings from the sandbox's spec).
        sandboxed: the handler is a sandbox runtime: the infra starts the pod's sandbox, whose hostname the
            spec names.
    """

    sandbox_config: api.PodSandboxConfig
    sandbox: SandboxInfo
    rootfs_path: str
    host: HostFacts
    args: tuple[str, ...] = ("/catatonit", "-P")
    sysctls: Mapping[str, str] = field(default_factory=dict)
    oom_score_adj: int = -998
    cpu_shares: int = 2
    allowed_annotations: tuple[str, ...] = ("*",)
    sandboxed: bool = False


__all__ = [
    "ContainerInputs",
    "HostDevice",
    "HostFacts",
    "InfraInputs",
    "Rlimit",
    "SandboxInfo",
    "refuse_localhost",
]
