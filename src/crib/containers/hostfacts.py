"""Probe, once at start-up, the node facts the spec builder needs (oci.HostFacts).

The oom_score_adj floor deserves a note: a process may lower its children's oom_score_adj below its own
only with CAP_SYS_RESOURCE. Many VMs and nested set-ups (this test host among them) do not grant it, and
runc then fails with an obscure "write /proc/self/oom_score_adj: permission denied". Like containerd's
restrict_oom_score_adj, crib raises lower requests to its own value instead, and says so once in the log.
"""

from __future__ import annotations

import platform
import resource
from pathlib import Path

from crib import log, oci
from crib.containers.inputs import host_devices
from crib.runtime.handlers import kernel_at_least
from crib.runtime.runc import Runc
from crib.system.cgroups import Cgroups

_log = log.get(__name__)


def _status_field(name: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return ""


async def probe(runc: Runc, cgroups: Cgroups) -> oci.HostFacts:
    caps = oci.capabilities_from_mask(int(_status_field("CapPrm") or "0", 16))
    try:
        features = await runc.features()
    except Exception as exc:  # an old runc without `features`: assume the conservative answers
        log.event(_log, 30, "runc features failed; assuming no recursive read-only mounts", error=str(exc))
        features = {}
    seccomp_feature = (features.get("linux") or {}).get("seccomp") or {}
    apparmor = _read(Path("/sys/module/apparmor/parameters/enabled")).strip() == "Y"
    own_oom = int(_read(Path("/proc/self/oom_score_adj")).strip() or 0)
    oom_min = -1000 if "CAP_SYS_RESOURCE" in caps else own_oom
    if oom_min > -1000:
        log.event(_log, 30, "this host does not grant CAP_SYS_RESOURCE: container oom_score_adj values below "
                  "the daemon's own are raised to it", floor=oom_min)
    if cgroups.v2:
        controllers = set(_read(cgroups.hierarchies[""] / "cgroup.controllers").split())
        swap, hugetlb = "memory" in controllers, "hugetlb" in controllers
    else:
        memory = cgroups.hierarchies.get("memory")
        swap = memory is not None and (memory / "memory.memsw.limit_in_bytes").exists()
        hugetlb = "hugetlb" in cgroups.hierarchies
    return oci.HostFacts(
        arch=platform.machine(), capabilities=caps, apparmor_enabled=apparmor,
        seccomp_enabled=bool(seccomp_feature.get("enabled", True)) and bool(_status_field("Seccomp")),
        rro_supported="rro" in (features.get("mountOptions") or ()) and kernel_at_least(5, 12),
        oom_score_adj_min=oom_min, cgroup_v2=cgroups.v2, swap_controller=swap, hugetlb_controller=hugetlb,
        host_devices=host_devices(),
        rlimits=oci.default_rlimits(resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


__all__ = ["probe"]
