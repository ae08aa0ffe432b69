"""Readings of pods and containers: one per object and max_age, shared by stats, metrics and scrapes.

kubelet asks for ListPodSandboxStats, ListContainerStats and ListPodSandboxMetrics in the same housekeeping
tick, `crib top` polls every second and Prometheus scrapes on its own schedule. Each of them asks the
Sampler, which reads an object's cgroup, writable layer and network namespace at most once per max_age and
hands every caller the same reading: the files behind a figure are read once however many clients want it.

A reading also carries the CPU rate (usage_nano_cores), computed against the previous distinct reading of
the same cgroup, which is why readings are remembered per cgroup path rather than per call. Entries of
objects nobody asked about for PRUNE_AFTER seconds are dropped.

Blocking (files, a directory walk, a thread entering network namespaces): call it from a worker thread.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crib import lazy
from crib.rootfs import overlay
from crib.rootfs.overlay import Rootfs

if TYPE_CHECKING:  # records import the network package, which counts into crib.metrics.ops: no import cycle
    from crib.runtime.layout import Layout
    from crib.state.records import ContainerRecord, SandboxRecord
    from crib.system import cgstats, fsinfo, netdev
    from crib.system.cgroups import Cgroups
    from crib.system.cgstats import CgroupReader, CgroupStats
    from crib.system.netdev import InterfaceStats
else:  # loaded by the first reading (daemon idle memory)
    cgstats = lazy.module("crib.system.cgstats")
    fsinfo = lazy.module("crib.system.fsinfo")
    netdev = lazy.module("crib.system.netdev")

PRUNE_AFTER = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FsReading:
    """The writable layer of a container (its upper directory and volumes) and the filesystem under it."""

    timestamp_ns: int
    mountpoint: str
    device: str
    used_bytes: int
    inodes_used: int
    capacity_bytes: int | None = None
    inodes: int | None = None
    inodes_free: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerReading:
    container: ContainerRecord
    cgroup: CgroupStats
    nano_cores: int | None
    fs: FsReading
    open_files_limit: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PodReading:
    sandbox: SandboxRecord
    cgroup: CgroupStats
    nano_cores: int | None
    interfaces: tuple[InterfaceStats, ...]
    network_timestamp_ns: int
    containers: tuple[ContainerReading, ...]


@dataclass(slots=True)
class _Entry:
    at: float  # monotonic time of the reading
    used: float  # monotonic time it was last handed out
    value: Any
    nano_cores: int | None = None


class Sampler:
    """See the module note."""

    def __init__(self, *, cgroups: Cgroups, layout: Layout, max_age: float) -> None:
        self._cgroups_layout = cgroups
        self._layout = layout
        self.max_age = max_age
        self._lock = threading.Lock()
        self._cgroups: dict[str, _Entry] = {}
        self._fs: dict[str, _Entry] = {}
        self._net: dict[str, _Entry] = {}
        self._fs_root = str(layout.root / "containers")
        self._pruned = time.monotonic()

    @functools.cached_property
    def reader(self) -> CgroupReader:
        """The host's cgroup reader, made on first use (what it can read: reader.psi, reader.hugetlb)."""
        return cgstats.CgroupReader(self._cgroups_layout)

    @functools.cached_property
    def _device(self) -> str:
        return fsinfo.device_of(self._fs_root)

    # --------------------------------------------------------------------------------------------- public

    def containers(self, recs: list[ContainerRecord], *, full: bool = False) -> list[ContainerReading]:
        """Readings of containers (a container that has exited reads as an empty cgroup).

        full: everything metrics show, not only what stats report (see CgroupReader.read); a full reading
        in the cache serves a call that needs less, not the other way round.
        """
        fs = fsinfo.fs_info(self._fs_root, self._device)
        out = [self._container(rec, fs, full) for rec in recs]
        self._prune()
        return out

    def pods(self, pods: list[tuple[SandboxRecord, list[ContainerRecord]]], *,
             full: bool = False) -> list[PodReading]:
        """Readings of pods with the given containers of each (full: as for containers())."""
        fs = fsinfo.fs_info(self._fs_root, self._device)
        nets = self._networks([sandbox for sandbox, _ in pods])
        out = []
        for sandbox, containers in pods:
            cg, cores = self._cgroup(sandbox.cgroup_parent, full)
            at, interfaces = nets.get(sandbox.netns_path, (time.time_ns(), ()))
            out.append(PodReading(sandbox=sandbox, cgroup=cg, nano_cores=cores, interfaces=interfaces,
                                  network_timestamp_ns=at,
                                  containers=tuple(self._container(c, fs, full) for c in containers)))
        self._prune()
        return out

    # -------------------------------------------------------------------------------------------- readings

    def _fresh(self, table: dict[str, _Entry], key: str, now: float) -> _Entry | None:
        entry = table.get(key)
        if entry is None or now - entry.at > self.max_age:
            return None
        entry.used = now
        return entry

    def _cgroup(self, path: str, full: bool) -> tuple[CgroupStats, int | None]:
        now = time.monotonic()
        if not path:
            return cgstats.CgroupStats(timestamp_ns=time.time_ns(), exists=False), None
        with self._lock:
            entry = self._fresh(self._cgroups, path, now)
            previous = self._cgroups.get(path)
        if entry is not None and (entry.value.full or not full):
            return entry.value, entry.nano_cores
        stats = self.reader.read(path, full=full)
        cores = None
        if previous is not None:
            cores = _rate(previous.value, stats)
        if stats.exists:
            with self._lock:
                self._cgroups[path] = _Entry(at=now, used=now, value=stats, nano_cores=cores)
        return stats, cores

    def _container(self, rec: ContainerRecord, fs: fsinfo.FsInfo | None, full: bool) -> ContainerReading:
        if rec.exited or not rec.cgroup_path:
            cg, cores = cgstats.CgroupStats(timestamp_ns=time.time_ns(), exists=False), None
        else:
            cg, cores = self._cgroup(rec.cgroup_path, full)
        return ContainerReading(container=rec, cgroup=cg, nano_cores=cores, fs=self._writable(rec, fs),
                                open_files_limit=cgstats.soft_open_files_limit(rec.pid)
                                if full and rec.running and rec.pid > 0 else None)

    def _writable(self, rec: ContainerRecord, fs: fsinfo.FsInfo | None) -> FsReading:
        now = time.monotonic()
        with self._lock:
            entry = self._fresh(self._fs, rec.id, now)
        if entry is None:
            fs_of = Rootfs(data=self._layout.container_data(rec.id),
                           target=self._layout.bundle(rec.id) / "rootfs")
            used, inodes = overlay.usage(fs_of)
            entry = _Entry(at=now, used=now, value=(time.time_ns(), used, inodes))
            with self._lock:
                self._fs[rec.id] = entry
        at_ns, used, inodes = entry.value
        return FsReading(timestamp_ns=at_ns, mountpoint=self._fs_root, device=self._device, used_bytes=used,
                         inodes_used=inodes, capacity_bytes=fs.capacity_bytes if fs else None,
                         inodes=fs.inodes if fs else None, inodes_free=fs.inodes_free if fs else None)

    def _networks(self, sandboxes: list[SandboxRecord]) -> dict[str, tuple[int, tuple[InterfaceStats, ...]]]:
        now = time.monotonic()
        out: dict[str, tuple[int, tuple[InterfaceStats, ...]]] = {}
        stale = []
        with self._lock:
            for sandbox in sandboxes:
                path = sandbox.netns_path
                if not path or sandbox.network_mode == "node":
                    continue
                entry = self._fresh(self._net, path, now)
                if entry is None:
                    stale.append(path)
                else:
                    out[path] = entry.value
        if stale:
            at = time.time_ns()
            for path, interfaces in netdev.read_namespaces(stale).items():
                out[path] = (at, interfaces)
                with self._lock:
                    self._net[path] = _Entry(at=now, used=now, value=(at, interfaces))
        return out

    def _prune(self) -> None:
        now = time.monotonic()
        if now - self._pruned < 60.0:
            return
        self._pruned = now
        with self._lock:
            for table in (self._cgroups, self._fs, self._net):
                for key in [k for k, e in table.items() if now - e.used > PRUNE_AFTER]:
                    del table[key]


def _rate(before: CgroupStats, after: CgroupStats) -> int | None:
    """CPU use between two readings in nanocores (1e9 = one CPU busy), as kubelet's usageNanoCores."""
    if before.cpu_usage_ns is None or after.cpu_usage_ns is None:
        return None
    elapsed = after.timestamp_ns - before.timestamp_ns
    used = after.cpu_usage_ns - before.cpu_usage_ns
    if elapsed <= 0 or used < 0:
        return None
    return used * 1_000_000_000 // elapsed


__all__ = ["ContainerReading", "FsReading", "PodReading", "Sampler"]
