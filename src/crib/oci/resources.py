"""CRI LinuxContainerResources -> OCI linux.resources, with the checks runc would fail on obscurely.

Zero means "not set" in every CRI field (proto3 has no presence for scalars), so a zero is left out and the
container inherits its cgroup parent's setting. The same conversion serves CreateContainer and
UpdateContainerResources (`runc update --resources`), so both accept and refuse the same things.

Memory+swap follows containerd: with a memory limit and no swap limit, swap is set equal to the limit (no
swap use); without a swap controller on the host (v1 without memsw accounting) swap is not set at all.
Hugepage limits are skipped on a host without the hugetlb controller (containerd's default tolerance);
`unified` (cgroup v2 files) is refused on a v1 host, where runc would fail on it.
"""

from __future__ import annotations

import re
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci.inputs import HostFacts

_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_PAGE_SIZE = re.compile(r"^\d+(KB|MB|GB|TB|PB)$")

OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000


def clamp_oom_score_adj(requested: int, host_minimum: int) -> int:
    """requested raised to what the host allows.

    Without CAP_SYS_RESOURCE a process cannot lower its oom_score_adj below its parent's, and runc then
    fails with "write /proc/self/oom_score_adj: permission denied". containerd's restrict_oom_score_adj
    clamps the same way; callers compare the result with the request to log the clamp.
    """
    return max(requested, host_minimum)


def check_oom_score_adj(value: int, *, container: str) -> int:
    """value if it is a valid oom_score_adj.

    Raises:
        InvalidArgument: outside -1000..1000.
    """
    if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
        raise InvalidArgument(f"container {container!r}: oom_score_adj {value} is outside "
                              f"{OOM_SCORE_ADJ_MIN}..{OOM_SCORE_ADJ_MAX}")
    return value


def _cpu(res: api.LinuxContainerResources, where: str) -> dict[str, Any]:
    cpu: dict[str, Any] = {}
    if res.cpu_shares < 0:
        raise InvalidArgument(f"{where}: cpu_shares {res.cpu_shares} must not be negative")
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        if res.cpu_quota != -1 and res.cpu_quota < 1000:
            raise InvalidArgument(f"{where}: cpu_quota {res.cpu_quota} must be -1 (unlimited) or at least "
                                  "1000 microseconds")
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        if not 1000 <= res.cpu_period <= 1_000_000:
            raise InvalidArgument(f"{where}: cpu_period {res.cpu_period} must be between 1000 and 1000000 "
                                  "microseconds")
        cpu["period"] = res.cpu_period
    for field, value in (("cpuset_cpus", res.cpuset_cpus), ("cpuset_mems", res.cpuset_mems)):
        if value:
            if not _CPUSET.match(value):
                raise InvalidArgument(f"{where}: {field} {value!r} is not a list like \"0-2,4\"")
            cpu["cpus" if field == "cpuset_cpus" else "mems"] = value
    return cpu


def _memory(res: api.LinuxContainerResources, where: str, host: HostFacts) -> dict[str, Any]:
    memory: dict[str, Any] = {}
    limit, swap = res.memory_limit_in_bytes, res.memory_swap_limit_in_bytes
    if limit < 0:
        raise InvalidArgument(f"{where}: memory_limit_in_bytes {limit} must not be negative")
    if swap < -1:
        raise InvalidArgument(f"{where}: memory_swap_limit_in_bytes {swap} must be -1 (unlimited) or "
                              "positive")
    if limit:
        memory["limit"] = limit
    if swap > 0 and limit and swap < limit:
        raise InvalidArgument(f"{where}: memory_swap_limit_in_bytes {swap} is below memory_limit_in_bytes "
                              f"{limit}; it counts memory plus swap, so it must be at least the memory limit")
    if host.swap_controller:
        if swap:
            memory["swap"] = swap
        elif limit:
            memory["swap"] = limit
    return memory


def linux_resources(res: api.LinuxContainerResources, *, container: str, host: HostFacts,
                    kind: str = "container") -> dict[str, Any]:
    """The linux.resources fields (cpu, memory, hugepageLimits, unified) of LinuxContainerResources.

    Device rules and the pids limit are not included: they do not come from this message. kind names what
    the resources are for in messages (pods are sized with the same checks).

    Raises:
        InvalidArgument: a value the kernel or runc would refuse, naming the field.
    """
    where = f"{kind} {container!r}: resources"
    out: dict[str, Any] = {}
    cpu = _cpu(res, where)
    if cpu:
        out["cpu"] = cpu
    memory = _memory(res, where, host)
    if memory:
        out["memory"] = memory
    if res.hugepage_limits and host.hugetlb_controller:
        pages = []
        for limit in res.hugepage_limits:
            if not _PAGE_SIZE.match(limit.page_size):
                raise InvalidArgument(f"{where}: hugepage page_size {limit.page_size!r} is not like \"2MB\" "
                                      "or \"1GB\"")
            pages.append({"pageSize": limit.page_size, "limit": limit.limit})
        out["hugepageLimits"] = pages
    if res.unified:
        if not host.cgroup_v2:
            raise InvalidArgument(f"{where}: unified sets cgroup v2 files, but this host runs cgroup v1; "
                                  "remove them")
        out["unified"] = dict(sorted(res.unified.items()))
    return out


__all__ = ["check_oom_score_adj", "clamp_oom_score_adj", "linux_resources"]
