"""Pure rules of a pod's set-up: namespace modes, sysctls, cgroup parents, the reserved name.

Kept apart from the code with side effects so that the rules are unit-tested without root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crib.errors import InvalidArgument

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


__all__ = ["MODES", "Namespaces", "cgroup_parent", "check_sysctls", "namespaces", "reserved_name",
           "sysctl_kind"]
