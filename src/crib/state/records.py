"""crib's stored records: frozen dataclasses, changed with dataclasses.replace, stored through codec.

Each domain adds its records here, so that every layer that needs to read one (the spec builder reads an
image's config, the servicers read everything) imports it from one place below them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from crib.network.types import PortMapping


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    """The runtime-relevant part of an OCI image config (`config` in the image's config blob).

    The spec builder reads it to fill in what the CRI ContainerConfig leaves out (args, env, user, working
    dir, stop signal, volumes).
    """

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    volumes: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    stop_signal: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    os: str = "linux"
    architecture: str = ""
    variant: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerRef:
    """One layer of an image, as the image service unpacked it.

    chain_id names the unpacked directory (shared by every image with the same layer stack below it);
    digest names the blob it came from.
    """

    digest: str
    diff_id: str
    chain_id: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRecord:
    """A pulled or imported image. id is the config digest ("sha256:<hex>"), as containerd reports it."""

    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    size: int = 0
    config: ImageConfig = field(default_factory=ImageConfig)
    layers: tuple[LayerRef, ...] = ()
    manifest_digest: str = ""
    manifest_media_type: str = ""
    created: str = ""
    pulled_at: float = 0.0


# ------------------------------------------------------------------------------ sandboxes and containers
#
# A pod or container record is written before any side effect (phase CREATING) and again after the last
# one (CREATED); a restarted daemon undoes whatever is still CREATING and finishes whatever is REMOVING.
# Everything else is derived from timestamps, never from a second flag:
#
#     sandbox:   CREATING --> CREATED, stopped_at == 0: READY --stop--> stopped_at > 0: NOTREADY
#     container: CREATING --> CREATED --start--> started_at > 0: RUNNING --exit--> finished_at > 0: EXITED
#     both:      ... --remove--> REMOVING --> (row deleted)


class Phase(enum.Enum):
    """Where an object is in its create/remove transaction."""

    CREATING = "creating"
    CREATED = "created"
    REMOVING = "removing"


@dataclass(frozen=True, slots=True, kw_only=True)
class PodMeta:
    """PodSandboxMetadata."""

    name: str
    uid: str
    namespace: str
    attempt: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class IDMap:
    """A line of a user namespace's uid_map/gid_map: container ids [c, c+length) are host [h, h+length)."""

    container_id: int
    host_id: int
    length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxRecord:
    """One pod sandbox: its namespaces (pinned files, or "" for the host's), files, cgroup and network."""

    id: str
    name: str  # the reserved name: <name>_<namespace>_<uid>_<attempt>
    meta: PodMeta
    phase: Phase = Phase.CREATING
    created_at: int = 0  # ns since the epoch
    stopped_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    runtime_handler: str = ""
    hostname: str = ""
    log_directory: str = ""
    cgroup_parent: str = ""
    cgroups_created: tuple[str, ...] = ()  # parents crib made (outermost first) and removes with the pod
    network_mode: str = "pod"  # "pod" | "node" (NamespaceMode, lowercased)
    pid_mode: str = "container"  # "pod" | "container" | "node" | "target"
    ipc_mode: str = "pod"
    pid_target: str = ""
    netns_path: str = ""
    ipcns_path: str = ""
    utsns_path: str = ""
    shm_path: str = ""
    infra_id: str = ""  # runc id of the PID-namespace holder (pid_mode "pod"); "" when there is none
    infra_pid: int = 0
    ips: tuple[str, ...] = ()
    port_mappings: tuple[PortMapping, ...] = ()
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    seccomp_profile: str = ""
    userns_path: str = ""  # pinned user namespace owning net/IPC/UTS; "" = the node's (hostUsers)
    uid_mappings: tuple[IDMap, ...] = ()
    gid_mappings: tuple[IDMap, ...] = ()
    resources: ResourcesRecord | None = None  # the pod cgroup's limits (resources + overhead), as last set

    @property
    def ready(self) -> bool:
        return self.phase is Phase.CREATED and self.stopped_at == 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MountRecord:
    """A CRI Mount as the container got it (reported back by ContainerStatus).

    An image volume (Mount.image) has no host_path; it names the image as the request did (image), the
    image's id (image_id: what holds the image while the container exists, and what ContainerStatus
    reports as its image_ref) and the image_sub_path mounted.
    """

    container_path: str
    host_path: str
    readonly: bool = False
    recursive_read_only: bool = False
    selinux_relabel: bool = False
    propagation: int = 0  # CRI MountPropagation value
    image: str = ""
    image_id: str = ""
    image_sub_path: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourcesRecord:
    """LinuxContainerResources as applied (after crib's clamping), for ContainerStatus and updates."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    memory_swap_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepage_limits: dict[str, int] = field(default_factory=dict)
    unified: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    """The uid/gid/groups the container process runs as (ContainerStatus.user)."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRecord:
    """One container; see the state diagram above."""

    id: str
    name: str  # the reserved name: <name>_<sandbox id>_<attempt>
    sandbox_id: str
    meta_name: str
    attempt: int = 0
    phase: Phase = Phase.CREATING
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    image: str = ""  # as the request named it
    image_id: str = ""
    image_ref: str = ""  # a repo digest when the image has one, else its id
    runtime_handler: str = ""
    log_path: str = ""  # absolute: the pod's log_directory joined with the container's log_path
    mounts: tuple[MountRecord, ...] = ()
    pid: int = 0
    cgroup_path: str = ""
    stop_signal: str = ""  # from the image; "" = SIGTERM
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    resources: ResourcesRecord | None = None
    user: UserRecord = field(default_factory=UserRecord)
    command: tuple[str, ...] = ()  # process.args as run

    @property
    def running(self) -> bool:
        return self.started_at > 0 and self.finished_at == 0

    @property
    def exited(self) -> bool:
        return self.finished_at > 0


__all__ = [
    "ContainerRecord",
    "IDMap",
    "ImageConfig",
    "ImageRecord",
    "LayerRef",
    "MountRecord",
    "Phase",
    "PodMeta",
    "ResourcesRecord",
    "SandboxRecord",
    "UserRecord",
]
