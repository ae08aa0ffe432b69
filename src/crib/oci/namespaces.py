"""Which namespaces a container creates and which of the pod's it joins (by path).

Network, IPC and UTS always come from the pod, following the pod's modes (kubelet sends a container the same
network and IPC modes as its pod; a host-network pod also keeps the host's UTS namespace). The container's
own NamespaceOption decides only the PID namespace:

    pid mode   | container joins
    -----------+---------------------------------------------------------------------------
    POD        | the pod's: the infra's PID namespace (or the host's for a host-PID pod)
    CONTAINER  | a new PID namespace of its own
    NODE       | the host's, only in a host-PID pod (a container cannot escalate alone)
    TARGET     | the target container's (ContainerInputs.target_pid_ns, found by the caller)

Every container gets its own mount namespace, and on cgroup v2 its own cgroup namespace unless privileged
(containerd's rule; v1 containers see their cgroups through runc's bind mounts instead).

The user namespace is the pod's too: a pod created with its own (userns_options mode POD) has it pinned
(SandboxInfo.userns_path) and every container and the infra process join it by path, with the pod's maps
written as linux.uidMappings/gidMappings (runc 1.1 reads them to know the host ids of the container's root).
A container's own userns_options (kubelet sends the pod's) must agree with the pod: POD only in a pod that
has one, NODE only in one that has none; CONTAINER and TARGET are invalid for user namespaces (CRI).
"""

from __future__ import annotations

from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci.inputs import SandboxInfo

POD = api.NamespaceMode.POD
CONTAINER = api.NamespaceMode.CONTAINER
NODE = api.NamespaceMode.NODE
TARGET = api.NamespaceMode.TARGET


def check_user_namespace(options: api.NamespaceOption, *, pod_has_userns: bool, what: str) -> None:
    """Refuse a container's user namespace request that its pod cannot give (see the module note).

    Args:
        options: the container's NamespaceOption.
        pod_has_userns: whether the pod was created with its own user namespace.
        what: names the object in the message, e.g. "container 'app'".

    Raises:
        InvalidArgument: mode CONTAINER or TARGET, which the CRI does not allow for user namespaces; a
            mode that disagrees with the pod's.
    """
    if not options.HasField("userns_options"):
        return
    mode = options.userns_options.mode
    if mode == NODE and pod_has_userns:
        raise InvalidArgument(f"{what}: userns_options mode NODE, but the pod has its own user namespace; "
                              "a container runs in its pod's (use POD)")
    if mode == POD and not pod_has_userns:
        raise InvalidArgument(f"{what}: userns_options mode POD, but the pod was created without a user "
                              "namespace of its own (hostUsers: true); use NODE")
    if mode not in (POD, NODE):
        raise InvalidArgument(f"{what}: userns_options mode {api.NamespaceMode.Name(mode)} is invalid; user "
                              "namespaces are POD or NODE")


def id_mappings(sandbox: SandboxInfo) -> dict[str, Any]:
    """linux.uidMappings and gidMappings of a user-namespaced pod's processes ({} without one)."""
    if not sandbox.userns_path:
        return {}
    return {key: [{"containerID": m.container_id, "hostID": m.host_id, "size": m.length} for m in maps]
            for key, maps in (("uidMappings", sandbox.uid_mappings), ("gidMappings", sandbox.gid_mappings))}


def _joined(kind: str, path: str, what: str) -> dict[str, Any]:
    if not path:
        raise ValueError(f"{what}: the pod's {kind} namespace path is missing from SandboxInfo")
    return {"type": kind, "path": path}


def _pid(pod: api.NamespaceOption, own: api.NamespaceOption, sandbox: SandboxInfo, target_pid_ns: str,
         container: str) -> dict[str, Any] | None:
    mode = own.pid
    if mode == CONTAINER:
        return {"type": "pid"}
    if mode == TARGET:
        if not target_pid_ns:
            raise InvalidArgument(f"container {container!r}: pid mode TARGET needs a running target "
                                  f"container (target_id {own.target_id!r})")
        return {"type": "pid", "path": target_pid_ns}
    if mode == NODE:
        if pod.pid != NODE:
            raise InvalidArgument(f"container {container!r}: pid mode NODE needs a pod created with the host "
                                  "PID namespace (pod pid mode NODE)")
        return None
    if mode != POD:
        raise InvalidArgument(f"container {container!r}: pid mode {mode} is not a known NamespaceMode")
    if pod.pid == NODE:
        return None
    if pod.pid != POD:
        raise InvalidArgument(f"container {container!r}: pid mode POD needs a pod that shares its PID "
                              "namespace (pod pid mode POD); use pid mode CONTAINER")
    return _joined("pid", sandbox.pidns_path, f"container {container!r}")


def _pod_shared(pod: api.NamespaceOption, sandbox: SandboxInfo, what: str) -> list[dict[str, Any]]:
    out = []
    if sandbox.userns_path:
        out.append({"type": "user", "path": sandbox.userns_path})
    if pod.ipc != NODE:
        out.append(_joined("ipc", sandbox.ipcns_path, what))
    if pod.network != NODE:
        out.append(_joined("uts", sandbox.utsns_path, what))
    out.append({"type": "mount"})
    if pod.network != NODE:
        out.append(_joined("network", sandbox.netns_path, what))
    return out


def container_namespaces(
    *,
    pod: api.NamespaceOption,
    own: api.NamespaceOption,
    sandbox: SandboxInfo,
    target_pid_ns: str,
    container: str,
    cgroup_v2: bool,
    privileged: bool,
    sandboxed: bool = False,
) -> list[dict[str, Any]]:
    """linux.namespaces of a container (see the module note).

    Under a sandboxed runtime (gVisor) a container always gets a PID namespace of its own inside the
    sandbox: gVisor turns a PID namespace path into a namespace shared by the containers naming it, whose
    init is the first of them, and once that one exits no process can be created in it (ENOMEM), so a pod
    could not start or restart a container any more. shareProcessNamespace is therefore not honoured there.

    Raises:
        InvalidArgument: a pid mode the pod cannot give (POD without a shared PID namespace, NODE in a
            non-host-PID pod, TARGET without a target).
        ValueError: SandboxInfo lacks a path the pod's modes require (a caller bug).
    """
    out = []
    pid = _pid(pod, own, sandbox, target_pid_ns, container)
    if sandboxed and pid is not None:
        pid = {"type": "pid"}
    if pid is not None:
        out.append(pid)
    out.extend(_pod_shared(pod, sandbox, f"container {container!r}"))
    if cgroup_v2 and not privileged:
        out.append({"type": "cgroup"})
    return out


def infra_namespaces(*, pod: api.NamespaceOption, sandbox: SandboxInfo) -> list[dict[str, Any]]:
    """linux.namespaces of a pod's infra process: a new PID namespace, the pod's net/IPC/UTS by path.

    The infra holds the PID namespace of a pod that shares one (pid mode POD); under a sandboxed runtime it
    is also what starts the pod's sandbox, whatever the pod's PID mode.

    Raises:
        ValueError: the pod uses the node's PID namespace, or a namespace path is missing.
    """
    what = f"pod sandbox {sandbox.sandbox_id}"
    if pod.pid == NODE:
        raise ValueError(f"{what}: a pod in the node's PID namespace has no infra process")
    return [{"type": "pid"}, *_pod_shared(pod, sandbox, what)]


__all__ = ["check_user_namespace", "container_namespaces", "id_mappings", "infra_namespaces"]
