"""Pure rules of a pod's set-up: namespace modes, the user namespace, sysctls, cgroup parents, the name.

Kept apart from the code with side effects so that the rules are unit-tested without root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crib.errors import InvalidArgument
from crib.state.records import IDMap

# CRI NamespaceMode values.
MODES = {0: "pod", 1: "container", 2: "node", 3: "target"}

# Sysctls that belong to a namespace (so a pod may set them without touching the node), the same table
# runc validates against: IPC (System V + POSIX message queues) and network.
_IPC_SYSCTLS = frozenset({"kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced", "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni"})
_NAME = re.compile(r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?([./][a-z0-9]([-_a-z0-9]*[a-z0-9])?)*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespaces:
    """Which namespaces a pod gets of its own; "node" means the host's."""

    network: str
    pid: str
    ipc: str
    target_id: str = ""

    @property
    def host_network(self) -> bool:
        return self.network == "node"


def namespaces(option: object | None) -> Namespaces:
    """NamespaceOption -> Namespaces. Unset fields mean POD (the enum's zero), as in the proto and in the
    spec builder: a pod that says nothing shares one PID namespace (kubelet always says CONTAINER unless
    shareProcessNamespace is set)."""
    if option is None:
        return Namespaces(network="pod", pid="pod", ipc="pod")
    net = MODES.get(getattr(option, "network", 0), "pod")
    pid = MODES.get(getattr(option, "pid", 0), "pod")
    ipc = MODES.get(getattr(option, "ipc", 0), "pod")
    if net not in ("pod", "node"):
        raise InvalidArgument(f"network namespace mode {net.upper()} is not valid for a pod; use POD or NODE")
    if ipc not in ("pod", "node"):
        raise InvalidArgument(f"IPC namespace mode {ipc.upper()} is not valid for a pod; use POD or NODE")
    if pid == "target":
        raise InvalidArgument("PID namespace mode TARGET is only valid for a container, not for a pod")
    return Namespaces(network=net, pid=pid, ipc=ipc, target_id=str(getattr(option, "target_id", "")))


MAX_HOST_ID = 2**32 - 1  # ids are 32 bits; (uid_t)-1 is never mapped


@dataclass(frozen=True, slots=True, kw_only=True)
class UserNamespace:
    """A pod's own user namespace (userns_options mode POD): its uid and gid maps, one range each."""

    uids: tuple[IDMap, ...]
    gids: tuple[IDMap, ...]

    @property
    def root(self) -> tuple[int, int]:
        """The host uid and gid of the pod's root (container id 0 is always mapped)."""
        return host_id(self.uids, 0), host_id(self.gids, 0)


def host_id(mappings: tuple[IDMap, ...], container_id: int) -> int:
    """The host id a container id maps to; ValueError if the mappings do not cover it."""
    for m in mappings:
        if m.container_id <= container_id < m.container_id + m.length:
            return m.host_id + container_id - m.container_id
    raise ValueError(f"container id {container_id} is not mapped")


def map_text(mappings: tuple[IDMap, ...]) -> str:
    """/proc/<pid>/uid_map (gid_map) text: "<container id> <host id> <length>" lines."""
    return "".join(f"{m.container_id} {m.host_id} {m.length}\n" for m in mappings)


def _mapping(items: object, what: str) -> tuple[IDMap, ...]:
    mappings = tuple(IDMap(container_id=m.container_id, host_id=m.host_id, length=m.length)
                     for m in items)  # type: ignore[attr-defined]
    if len(mappings) != 1:
        raise InvalidArgument(f"user namespace: {what} must hold exactly one mapping (kubelet sends one), "
                              f"got {len(mappings)}")
    (m,) = mappings
    if m.container_id != 0:
        raise InvalidArgument(f"user namespace: {what} maps container ids from {m.container_id}; container "
                              "id 0 (the pod's root) must be mapped: set container_id to 0")
    if m.length < 1:
        raise InvalidArgument(f"user namespace: {what} has length {m.length}; map at least one id")
    if m.host_id == 0:
        raise InvalidArgument(f"user namespace: {what} maps the pod's root to host id 0, the node's root; "
                              "give a host range above 0")
    if m.host_id + m.length > MAX_HOST_ID:
        raise InvalidArgument(f"user namespace: {what} host range {m.host_id}+{m.length} goes past "
                              f"{MAX_HOST_ID - 1}")
    return mappings


def user_namespace(option: object | None, ns: Namespaces) -> UserNamespace | None:
    """The pod's user namespace from NamespaceOption.userns_options; None = the node's (mode NODE, unset).

    Raises:
        InvalidArgument: mode CONTAINER or TARGET; mode POD without exactly one uid and one gid mapping
            of container id 0 (to a host range above 0); mappings with mode NODE; a user namespace with
            the host network, IPC or PID namespace (crib does not support user_namespaces_host_network).
    """
    if option is None or not option.HasField("userns_options"):  # type: ignore[attr-defined]
        return None
    userns = option.userns_options  # type: ignore[attr-defined]
    mode = MODES.get(userns.mode, "pod")
    if mode == "node":
        if userns.uids or userns.gids:
            raise InvalidArgument("user namespace mode NODE takes no uids/gids mappings; drop them or use "
                                  "POD")
        return None
    if mode != "pod":
        raise InvalidArgument(f"user namespace mode {mode.upper()} is not valid; a pod's user namespace is "
                              "POD (its own) or NODE (the node's)")
    shared = [name for name, host in (("network", ns.host_network), ("IPC", ns.ipc == "node"),
                                      ("PID", ns.pid == "node")) if host]
    if shared:
        raise InvalidArgument(f"a pod with its own user namespace cannot use the host {' and '.join(shared)} "
                              "namespace; drop hostNetwork/hostIPC/hostPID or set hostUsers: true")
    return UserNamespace(uids=_mapping(userns.uids, "uids"), gids=_mapping(userns.gids, "gids"))


def sysctl_kind(name: str) -> str:
    """"ipc" or "net" for a namespaced sysctl, "" for one that would change the whole node."""
    dotted = name.replace("/", ".")
    if dotted in _IPC_SYSCTLS or dotted.startswith("fs.mqueue."):
        return "ipc"
    if dotted.startswith("net."):
        return "net"
    return ""


def check_sysctls(sysctls: dict[str, str], ns: Namespaces) -> dict[str, str]:
    """Refuse sysctls that are not namespaced, or whose namespace the pod shares with the node.

    Raises:
        InvalidArgument: naming the sysctl and why.
    """
    for name, value in sysctls.items():
        if not _NAME.match(name) or "\n" in value or "\0" in value:
            raise InvalidArgument(f"sysctl {name!r}={value!r} is not a valid sysctl name and value")
        kind = sysctl_kind(name)
        if not kind:
            raise InvalidArgument(
                f"sysctl {name} is not namespaced: setting it for a pod would change the whole node; "
                "only net.*, fs.mqueue.*, kernel.shm*, kernel.msg* and kernel.sem can be set per pod")
        if kind == "net" and ns.host_network:
            raise InvalidArgument(f"sysctl {name} needs the pod's own network namespace, but the pod uses "
                                  "the host network; drop the sysctl or the host network")
        if kind == "ipc" and ns.ipc == "node":
            raise InvalidArgument(f"sysctl {name} needs the pod's own IPC namespace, but the pod uses the "
                                  "host IPC namespace; drop the sysctl or host IPC")
    return dict(sysctls)


def cgroup_parent(requested: str, *, driver: str, default_parent: str, sandbox_id: str) -> str:
    """The cgroup a pod's containers go under.

    Raises:
        InvalidArgument: a systemd-style parent ("*.slice") while crib drives cgroupfs, or a relative path.
    """
    if not requested:
        return f"{default_parent.rstrip('/')}/{sandbox_id}"
    if requested.endswith(".slice") or ".slice/" in requested:
        if driver != "systemd":
            raise InvalidArgument(
                f"cgroup_parent {requested!r} is a systemd slice, but crib manages cgroups with cgroupfs "
                "(this host runs no systemd); give a cgroupfs path such as /kubepods/pod<uid>, or set "
                "kubelet's cgroupDriver to cgroupfs")
        raise InvalidArgument(f"cgroup_parent {requested!r}: the systemd driver is not supported by crib")
    if not requested.startswith("/") or ".." in requested.split("/"):
        raise InvalidArgument(f"cgroup_parent {requested!r} must be an absolute cgroup path like /kubepods/x")
    return requested.rstrip("/") or "/"


def reserved_name(name: str, namespace: str, uid: str, attempt: int) -> str:
    """The unique key of a pod, as kubelet builds it for other runtimes (name_namespace_uid_attempt)."""
    return f"{name}_{namespace}_{uid}_{attempt}"


__all__ = ["MODES", "Namespaces", "UserNamespace", "cgroup_parent", "check_sysctls", "host_id", "map_text",
           "namespaces", "reserved_name", "sysctl_kind", "user_namespace"]
