"""A pod's own limits: LinuxPodSandboxConfig.resources plus the RuntimeClass overhead, on the pod cgroup.

Set at RunPodSandbox and changed by UpdatePodSandboxResources (in-place pod resize). Both apply to the pod
cgroup only when crib made it: a cgroup parent kubelet created is kubelet's to size (kubelet resizes it
itself before it tells the runtime), so then the new values are only recorded.

The pod's figure is resources + overhead for what adds up (CPU shares and quota, memory, huge pages) and the
resources' own for what does not (period, cpusets, unified files), the sum kubelet computes for a pod
cgroup. A memory limit below what the pod uses now is refused with FAILED_PRECONDITION instead of
written: the kernel would reclaim or OOM-kill to get there. "Uses" is the working set (usage less
inactive file pages, which the kernel drops first), what kubelet and `kubectl top` call memory use.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from crib import log, oci
from crib.errors import FailedPrecondition
from crib.sandbox.deps import SandboxDeps
from crib.state.records import ResourcesRecord, SandboxRecord
from crib.system.cgroups import CgroupWriteError

_log = log.get(__name__)


def pod_limits(resources: Any, overhead: Any, *, pod: str, host: oci.HostFacts) -> dict[str, Any]:
    """The OCI linux.resources of a pod cgroup from the two CRI messages (validated; see the module note).

    Raises:
        InvalidArgument: a value the kernel would refuse, naming the field.
    """
    res = oci.linux_resources(resources, container=pod, host=host, kind="pod")
    extra = oci.linux_resources(overhead, container=pod, host=host, kind="pod overhead")
    cpu, memory = dict(res.get("cpu", {})), dict(res.get("memory", {}))
    extra_cpu, extra_memory = extra.get("cpu", {}), extra.get("memory", {})
    if cpu.get("shares"):
        cpu["shares"] += extra_cpu.get("shares", 0)
    if cpu.get("quota", 0) > 0:
        cpu["quota"] += max(extra_cpu.get("quota", 0), 0)
    if memory.get("limit"):
        memory["limit"] += extra_memory.get("limit", 0)
    if resources.memory_swap_limit_in_bytes == 0:
        memory.pop("swap", None)  # no swap limit asked for the pod: its containers carry their own
    elif memory.get("swap", 0) > 0:
        memory["swap"] += extra_memory.get("limit", 0)
    out: dict[str, Any] = {}
    if cpu:
        out["cpu"] = cpu
    if memory:
        out["memory"] = memory
    pages = {p["pageSize"]: p["limit"] for p in res.get("hugepageLimits", [])}
    for p in extra.get("hugepageLimits", []):
        if p["pageSize"] in pages:
            pages[p["pageSize"]] += p["limit"]
    if pages:
        out["hugepageLimits"] = [{"pageSize": k, "limit": v} for k, v in sorted(pages.items())]
    if res.get("unified"):
        out["unified"] = res["unified"]
    return out


def record_of(limits: dict[str, Any]) -> ResourcesRecord:
    cpu, memory = limits.get("cpu", {}), limits.get("memory", {})
    return ResourcesRecord(
        cpu_period=cpu.get("period", 0), cpu_quota=cpu.get("quota", 0), cpu_shares=cpu.get("shares", 0),
        memory_limit_in_bytes=memory.get("limit", 0), memory_swap_limit_in_bytes=memory.get("swap", 0),
        cpuset_cpus=cpu.get("cpus", ""), cpuset_mems=cpu.get("mems", ""),
        hugepage_limits={p["pageSize"]: p["limit"] for p in limits.get("hugepageLimits", [])},
        unified=dict(limits.get("unified", {})))


def _name(rec: SandboxRecord) -> str:
    return f"pod {rec.meta.namespace}/{rec.meta.name} ({rec.id[:12]})"


def owns_cgroup(rec: SandboxRecord) -> bool:
    return rec.cgroup_parent in rec.cgroups_created


def apply(deps: SandboxDeps, rec: SandboxRecord, limits: dict[str, Any]) -> None:
    """Write limits into the pod cgroup (blocking; see the module note for the memory check).

    Raises:
        FailedPrecondition: the memory limit is below the pod's use, or the kernel refused a value.
    """
    memory = limits.get("memory", {}).get("limit", 0)
    if memory:
        from crib.system.cgstats import CgroupReader  # here: the idle daemon does not load the readers

        used = CgroupReader(deps.cgroups).read(rec.cgroup_parent).memory_working_set
        if used is not None and memory < used:
            raise FailedPrecondition(
                f"{_name(rec)}: memory limit {memory} bytes (resources plus overhead) is below the {used} "
                "bytes the pod uses now; free memory in the pod first or ask for a limit of at least its "
                "current use")
    try:
        deps.cgroups.write_limits(rec.cgroup_parent, limits)
    except CgroupWriteError as exc:
        raise FailedPrecondition(f"{_name(rec)}: the kernel refused the new limits, nothing was changed: "
                                 f"{exc} (a pod limit cannot go below what its containers hold: lower "
                                 "theirs first)") from exc


async def update(deps: SandboxDeps, rec: SandboxRecord, resources: Any, overhead: Any) -> SandboxRecord:
    """UpdatePodSandboxResources on a ready pod (the caller holds its lock)."""
    if not rec.ready:
        raise FailedPrecondition(f"{_name(rec)} is not ready; only a running pod can be resized")
    limits = pod_limits(resources, overhead, pod=rec.meta.name, host=deps.host)
    if owns_cgroup(rec):
        await asyncio.to_thread(apply, deps, rec, limits)
    else:
        log.event(_log, 20, "pod cgroup is kubelet's; new pod resources recorded only", pod=rec.id,
                  cgroup=rec.cgroup_parent)
    return deps.store.put_sandbox(dataclasses.replace(rec, resources=record_of(limits)))


__all__ = ["apply", "owns_cgroup", "pod_limits", "record_of", "update"]
