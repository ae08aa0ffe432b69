"""Container and pod resource usage, from cgroups and the writable layer (ContainerStats, PodSandboxStats)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from crib.rootfs import overlay
from crib.rootfs.overlay import Rootfs
from crib.runtime.layout import Layout
from crib.state.records import ContainerRecord, SandboxRecord
from crib.system.cgroups import Cgroups, Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerUsage:
    container: ContainerRecord
    cgroup: Usage
    fs_timestamp_ns: int
    fs_mountpoint: str
    fs_bytes: int
    fs_inodes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceUsage:
    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PodUsage:
    sandbox: SandboxRecord
    cgroup: Usage
    containers: tuple[ContainerUsage, ...]
    processes: int
    interfaces: tuple[InterfaceUsage, ...]
    network_timestamp_ns: int


def container_usage(layout: Layout, cgroups: Cgroups, rec: ContainerRecord) -> ContainerUsage:
    """Counters of one container; blocking (walks the writable layer), run it in a thread."""
    fs = Rootfs(data=layout.container_data(rec.id), target=layout.bundle(rec.id) / "rootfs")
    used, inodes = overlay.usage(fs)
    if rec.running and rec.cgroup_path:
        cg = cgroups.usage(rec.cgroup_path)
    else:
        cg = Usage(timestamp_ns=time.time_ns())
    return ContainerUsage(container=rec, cgroup=cg, fs_timestamp_ns=time.time_ns(),
                          fs_mountpoint=str(layout.root / "containers"), fs_bytes=used, fs_inodes=inodes)


def net_dev(pid: int) -> tuple[InterfaceUsage, ...]:
    """Interfaces of the network namespace pid lives in (/proc/<pid>/net/dev), loopback left out."""
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return ()
    out = []
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) < 16 or name.strip() == "lo":
            continue
        out.append(InterfaceUsage(name=name.strip(), rx_bytes=int(fields[0]), rx_errors=int(fields[2]),
                                  tx_bytes=int(fields[8]), tx_errors=int(fields[10])))
    return tuple(out)


def pod_usage(layout: Layout, cgroups: Cgroups, sandbox: SandboxRecord,
              containers: list[ContainerRecord]) -> PodUsage:
    """Counters of a pod: its cgroup parent (children included), its containers, its interfaces."""
    per = tuple(container_usage(layout, cgroups, c) for c in containers)
    pids = [c.pid for c in containers if c.running and c.pid > 0] + ([sandbox.infra_pid] if sandbox.infra_pid
                                                                       else [])
    interfaces = net_dev(pids[0]) if pids and sandbox.network_mode != "node" else ()
    return PodUsage(sandbox=sandbox, cgroup=cgroups.usage(sandbox.cgroup_parent), containers=per,
                    processes=sum(c.cgroup.pids or 0 for c in per), interfaces=interfaces,
                    network_timestamp_ns=time.time_ns())


__all__ = ["ContainerUsage", "InterfaceUsage", "PodUsage", "container_usage", "net_dev", "pod_usage"]
