"""Cgroups, cgroupfs style: pod parents, placing conmon, and reading usage for stats.

runc creates and removes each container's own cgroup; crib only manages a pod's parent (created when it
does not exist, removed with the pod if crib created it) and sizes it; counters are system/cgstats.py's.
Both layouts are handled:
v1 (one hierarchy per controller, this host, with cgroup2 mounted beside it at /sys/fs/cgroup/unified
and no controllers there) and v2 (one unified tree).

Paths given to this module are cgroup paths ("/kubepods/pod123"), never filesystem paths.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
_CGROUP2_MAGIC = 0x63677270


class CgroupWriteError(OSError):
    """The kernel refused a limit (the message names the file and the reason)."""


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
        """rmdir cgroup in every hierarchy (retrying while it empties, for timeout in all); returns what could
        not go."""
        failed: list[str] = []
        deadline = time.monotonic() + timeout
        for base in self.dirs_roots:
            target = base / cgroup.strip("/")
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

    def kill_and_remove(self, cgroup: str, *, timeout: float = 5.0) -> list[str]:
        """SIGKILL whatever is still in a container's own cgroup, then remove it; returns what could not go.

        For the leftovers nothing else knows about: a `runc init` orphaned by a runc killed in the middle of
        `runc create` has no runc state (so `runc delete` does not find it) and no conmon, only its cgroup.
        """
        self.kill_procs(cgroup)
        return self.remove(cgroup, timeout=timeout)

    def kill_procs(self, cgroup: str, signum: int = signal.SIGKILL, *,
                   only: Collection[int] | None = None) -> int:
        """Send signum to the processes in a cgroup (to those of `only` among them); how many it reached.

        Chosen by membership, never by a pid alone, so a pid the kernel reused elsewhere is never hit.
        """
        targets = self.procs(cgroup)
        if only is not None:
            targets &= set(only)
        reached = 0
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
                reached += 1
        return reached

    def procs(self, cgroup: str) -> set[int]:
        """The pids in a cgroup (in any hierarchy; a missing cgroup has none)."""
        pids: set[int] = set()
        for base in self.dirs_roots:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in (base / cgroup.strip("/") / "cgroup.procs").read_text().split())
        return pids

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

    def write_limits(self, cgroup: str, resources: Mapping[str, Any]) -> None:
        """Write OCI-style linux.resources (cpu, memory, hugepageLimits, unified) into a cgroup crib owns.

        All or nothing: each file's old value is read first, and if the kernel refuses a write (a quota
        below a child's, a cpuset a child still uses, a memory limit it cannot reclaim down to) the files
        already written get their old values back before the error is raised.

        Raises:
            CgroupWriteError: the kernel refused a value; says which file and why.
        """
        writes = self._limit_writes(cgroup, resources)
        done: list[tuple[Path, str]] = []
        for path, value in writes:
            try:
                old = path.read_text().strip()
                path.write_text(value)
            except OSError as exc:
                for undo_path, undo_value in reversed(done):
                    with contextlib.suppress(OSError):
                        undo_path.write_text(undo_value)
                raise CgroupWriteError(f"writing {value!r} to {path}: {exc.strerror or exc}") from exc
            done.append((path, old))

    def _limit_writes(self, cgroup: str, res: Mapping[str, Any]) -> list[tuple[Path, str]]:
        cpu, memory = res.get("cpu", {}), res.get("memory", {})
        pages = {p["pageSize"]: int(p["limit"]) for p in res.get("hugepageLimits", [])}
        rel = cgroup.strip("/")
        writes: list[tuple[Path, str]] = []
        if self.v2:
            base = self.hierarchies[""] / rel
            if cpu.get("shares"):  # the same conversion runc and kubelet use from v1 shares to v2 weight
                shares = max(2, min(int(cpu["shares"]), 262144))
                writes.append((base / "cpu.weight", str(1 + ((shares - 2) * 9999) // 262142)))
            if cpu.get("quota") or cpu.get("period"):
                quota = int(cpu.get("quota", 0))
                period = cpu.get("period") or 100000
                writes.append((base / "cpu.max", f"{quota if quota > 0 else 'max'} {period}"))
            writes += [(base / f"cpuset.{key}", cpu[key]) for key in ("cpus", "mems") if cpu.get(key)]
            if memory.get("limit"):
                writes.append((base / "memory.max", str(memory["limit"])))
            if memory.get("swap"):
                swap = int(memory["swap"])
                swap_only = "max" if swap < 0 else str(max(0, swap - int(memory.get("limit", 0))))
                writes.append((base / "memory.swap.max", swap_only))
            writes += [(base / f"hugetlb.{size}.max", str(limit)) for size, limit in pages.items()]
            writes += [(base / name, value) for name, value in res.get("unified", {}).items()]
            return writes

        def at(controller: str, name: str) -> Path | None:
            return self.hierarchies[controller] / rel / name if controller in self.hierarchies else None

        wanted = [("cpu", "cpu.shares", cpu.get("shares")), ("cpu", "cpu.cfs_period_us", cpu.get("period")),
                  ("cpu", "cpu.cfs_quota_us", cpu.get("quota")), ("cpuset", "cpuset.cpus", cpu.get("cpus")),
                  ("cpuset", "cpuset.mems", cpu.get("mems"))]
        # memory+swap must stay >= memory: raise memsw before memory, lower it after.
        limit, swap = memory.get("limit"), memory.get("swap")
        mem = [("memory", "memory.limit_in_bytes", limit), ("memory", "memory.memsw.limit_in_bytes", swap)]
        current = _read_int(at("memory", "memory.limit_in_bytes"))
        if swap and limit and current is not None and limit > current:
            mem.reverse()
        wanted += mem
        wanted += [("hugetlb", f"hugetlb.{size}.limit_in_bytes", limit) for size, limit in pages.items()]
        for controller, name, value in wanted:
            path = at(controller, name)
            if value and path is not None:
                writes.append((path, str(value)))
        return writes

    def exists(self, cgroup: str) -> bool:
        return all((base / cgroup.strip("/")).is_dir() for base in self.dirs_roots)


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


__all__ = ["CGROUP_ROOT", "CgroupWriteError", "Cgroups"]
