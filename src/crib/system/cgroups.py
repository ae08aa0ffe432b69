"""Cgroups, cgroupfs style: pod parents, placing conmon, and reading usage for stats.

runc creates and removes each container's own cgroup; crib only manages a pod's parent (created when it
does not exist, removed with the pod if crib created it) and reads counters. Both layouts are handled:
v1 (one hierarchy per controller, this host, with cgroup2 mounted beside it at /sys/fs/cgroup/unified
and no controllers there) and v2 (one unified tree).

Paths given to this module are cgroup paths ("/kubepods/pod123"), never filesystem paths.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_CGROUP2_MAGIC = 0x63677270


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """A snapshot of one cgroup's counters; None where the controller is not available."""

    timestamp_ns: int
    cpu_ns: int | None = None
    memory_usage: int | None = None
    memory_working_set: int | None = None
    memory_rss: int | None = None
    memory_available: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    pids: int | None = None


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) of cgroup mounts."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fields = right.split()
            if fields and fields[0] in ("cgroup", "cgroup2"):
                out.append((left.split()[4], fields[0], fields[2] if len(fields) > 2 else ""))
    return out


class Cgroups:
    """The host's cgroup layout, probed once at start-up."""

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.v2 = False
        self._lock = threading.Lock()
        self.hierarchies: dict[str, Path] = {}  # controller (or "name=x") -> mount point
        with contextlib.suppress(OSError):
            self.v2 = _is_cgroup2(root)
        if self.v2:
            self.hierarchies[""] = root
            return
        for point, fstype, opts in _mounts():
            if not point.startswith(str(root) + "/"):
                continue
            if fstype == "cgroup2":
                # Hybrid layout: the unified tree holds no controllers, but runc creates every container's
                # cgroup there too, so pod parents must exist (and be removed) there as well.
                self.hierarchies.setdefault("unified", Path(point))
                continue
            for opt in opts.split(","):
                if opt in ("rw", "ro") or opt.startswith(("release_agent", "clone_children", "xattr")):
                    continue
                self.hierarchies.setdefault(opt, Path(point))

    @property
    def dirs_roots(self) -> list[Path]:
        """One mount point per hierarchy (v1 co-mounted controllers share one)."""
        return sorted(set(self.hierarchies.values()))

    def path(self, controller: str, cgroup: str) -> Path:
        base = self.hierarchies[""] if self.v2 else self.hierarchies[controller]
        return base / cgroup.strip("/")

    # ------------------------------------------------------------------------------------------ parents

    def ensure(self, cgroup: str) -> list[str]:
        """Create cgroup (and missing ancestors) in every hierarchy; returns the paths this call created,
        outermost first, so that remove_created() can undo exactly that."""
        with self._lock:  # parallel RunPodSandbox calls share parents: no half-initialized cpuset seen
            return self._ensure(cgroup)

    def _ensure(self, cgroup: str) -> list[str]:
        parts = [p for p in cgroup.strip("/").split("/") if p]
        created: list[str] = []
        for depth in range(1, len(parts) + 1):
            rel = "/" + "/".join(parts[:depth])
            made = False
            for base in self.dirs_roots:
                target = base / rel.lstrip("/")
                try:
                    target.mkdir()
                    made = True
                except FileExistsError:
                    pass
                self._init_dir(base, target)  # idempotent: fills only what is still empty
            if made:
                created.append(rel)
        return created

    def _init_dir(self, base: Path, target: Path) -> None:
        # A new v1 cpuset cgroup starts with no CPUs and no memory nodes; nothing can join it until they
        # are copied from the parent. v2 needs controllers delegated to the children.
        if self.v2:
            if (target.parent / "cgroup.subtree_control").exists() and \
                    (target.parent / "cgroup.subtree_control").read_text().strip():
                return
            with contextlib.suppress(OSError):
                ctrls = (target.parent / "cgroup.controllers").read_text().split()
                (target.parent / "cgroup.subtree_control").write_text(" ".join("+" + c for c in ctrls))
            return
        if base == self.hierarchies.get("cpuset"):
            for name in ("cpuset.cpus", "cpuset.mems"):
                with contextlib.suppress(OSError):
                    if not (target / name).read_text().strip():
                        (target / name).write_text((target.parent / name).read_text())

    def remove(self, cgroup: str, *, timeout: float = 5.0) -> list[str]:
        """rmdir cgroup in every hierarchy (retrying while it empties); returns what could not go."""
        failed: list[str] = []
        for base in self.dirs_roots:
            target = base / cgroup.strip("/")
            deadline = time.monotonic() + timeout
            while True:
                try:
                    target.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        failed.append(f"{target}: {exc.strerror}")
                        break
                    time.sleep(0.02)
        return failed

    def remove_created(self, created: list[str]) -> list[str]:
        """Undo ensure(): remove what it created, innermost first (never while another ensure() runs)."""
        failed: list[str] = []
        with self._lock:
            for rel in reversed(created):
                failed += self.remove(rel)
        return failed

    def attach(self, cgroup: str, pid: int) -> None:
        """Move pid into cgroup in every hierarchy.

        On v2 the caller passes a leaf: a cgroup with children that use controllers cannot hold processes.
        """
        for base in self.dirs_roots:
            target = base / cgroup.strip("/")
            (target / "cgroup.procs").write_text(str(pid))

    def set_limits(self, cgroup: str, *, memory: int = 0, cpu_shares: int = 0, cpu_quota: int = 0,
                   cpu_period: int = 0) -> None:
        """Write a pod-level memory limit and CPU weight/quota (0 = leave as is) into cgroup."""
        if self.v2:
            base = self.hierarchies[""] / cgroup.strip("/")
            if memory > 0:
                (base / "memory.max").write_text(str(memory))
            if cpu_shares > 0:  # the same conversion runc and kubelet use from v1 shares to v2 weight
                weight = 1 + ((max(2, min(cpu_shares, 262144)) - 2) * 9999) // 262142
                (base / "cpu.weight").write_text(str(weight))
            if cpu_quota > 0:
                (base / "cpu.max").write_text(f"{cpu_quota} {cpu_period or 100000}")
            return
        writes = []
        if memory > 0:
            writes.append(("memory", "memory.limit_in_bytes", memory))
        if cpu_shares > 0:
            writes.append(("cpu", "cpu.shares", cpu_shares))
        if cpu_period > 0:
            writes.append(("cpu", "cpu.cfs_period_us", cpu_period))
        if cpu_quota > 0:
            writes.append(("cpu", "cpu.cfs_quota_us", cpu_quota))
        for controller, name, value in writes:
            if controller in self.hierarchies:
                (self.hierarchies[controller] / cgroup.strip("/") / name).write_text(str(value))

    def exists(self, cgroup: str) -> bool:
        return all((base / cgroup.strip("/")).is_dir() for base in self.dirs_roots)

    # -------------------------------------------------------------------------------------------- usage

    def usage(self, cgroup: str) -> Usage:
        """Counters of one cgroup (hierarchical: children included)."""
        now = time.time_ns()
        return self._usage_v2(cgroup, now) if self.v2 else self._usage_v1(cgroup, now)

    def _usage_v1(self, cgroup: str, now: int) -> Usage:
        cpu = _read_int(self._maybe("cpuacct", cgroup, "cpuacct.usage"))
        mem_usage = _read_int(self._maybe("memory", cgroup, "memory.usage_in_bytes"))
        stat = _read_kv(self._maybe("memory", cgroup, "memory.stat"))
        limit = _read_int(self._maybe("memory", cgroup, "memory.limit_in_bytes"))
        working = None
        if mem_usage is not None:
            inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
            working = max(0, mem_usage - inactive)
        available = None
        if limit is not None and working is not None and limit < (1 << 62):
            available = max(0, limit - working)
        return Usage(
            timestamp_ns=now, cpu_ns=cpu, memory_usage=mem_usage, memory_working_set=working,
            memory_rss=stat.get("total_rss", stat.get("rss")) if stat else None,
            memory_available=available,
            page_faults=stat.get("total_pgfault") if stat else None,
            major_page_faults=stat.get("total_pgmajfault") if stat else None,
            pids=_read_int(self._maybe("pids", cgroup, "pids.current")),
        )

    def _usage_v2(self, cgroup: str, now: int) -> Usage:
        base = self.hierarchies[""] / cgroup.strip("/")
        cpu_stat = _read_kv(base / "cpu.stat")
        mem_usage = _read_int(base / "memory.current")
        stat = _read_kv(base / "memory.stat")
        working = None if mem_usage is None else max(0, mem_usage - stat.get("inactive_file", 0))
        limit_text = _read_text(base / "memory.max")
        available = None
        if limit_text and limit_text != "max" and working is not None:
            available = max(0, int(limit_text) - working)
        usec = cpu_stat.get("usage_usec")
        return Usage(
            timestamp_ns=now, cpu_ns=None if usec is None else usec * 1000, memory_usage=mem_usage,
            memory_working_set=working, memory_rss=stat.get("anon"), memory_available=available,
            page_faults=stat.get("pgfault"), major_page_faults=stat.get("pgmajfault"),
            pids=_read_int(base / "pids.current"),
        )

    def _maybe(self, controller: str, cgroup: str, name: str) -> Path | None:
        if controller not in self.hierarchies:
            return None
        return self.hierarchies[controller] / cgroup.strip("/") / name


def _is_cgroup2(root: Path) -> bool:
    for point, fstype, _ in _mounts():
        if point == str(root):
            return fstype == "cgroup2"
    return False


def _read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path | None) -> int | None:
    text = _read_text(path)
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _read_kv(path: Path | None) -> dict[str, int]:
    text = _read_text(path)
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


__all__ = ["CGROUP_ROOT", "Cgroups", "Usage"]
