"""Every counter of one cgroup that stats and metrics report, each file read once, on v1 and v2.

Stats (ContainerStats, PodSandboxStats), CRI metrics and the Prometheus endpoint all derive from one
CgroupStats per cgroup and reading (metrics/cadvisor.py caches it), so the cost of a scrape is the files
below, read with one open/read/close each, and nothing else: no process is spawned, no file parsed twice.

    v1 (one hierarchy per controller)          v2 (one tree)
    cpuacct.usage, cpuacct.stat                cpu.stat (usage, user, system, periods, throttling)
    cpu.stat, cpu.shares, cpu.cfs_*_us         cpu.max, cpu.weight
    memory.{usage,max_usage,limit,             memory.{current,peak,max,low,swap.current,swap.max},
      soft_limit}_in_bytes, memory.failcnt,    memory.events (max -> failcnt, oom_kill), memory.stat
      memory.memsw.limit_in_bytes,
      memory.kmem.usage_in_bytes,
      memory.stat, memory.oom_control
    pids.current, pids.max                     pids.current, pids.max
    blkio.throttle.io_service{d,_bytes}_       io.stat
      recursive
    cgroup.procs, tasks                        cgroup.procs, cgroup.threads
    <unified>/{cpu,memory,io}.pressure         {cpu,memory,io}.pressure
    hugetlb.<size>.{usage,max_usage}_in_bytes  hugetlb.<size>.current

The hybrid layout of this project's hosts (v1 controllers, cgroup2 mounted beside them) still has the
pressure files in the unified tree, where runc creates every container's cgroup too: PSI is read there.
Per-process figures (open files, sockets, the soft open-files limit) come from /proc/<pid> of the
processes the cgroup lists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crib.system.cgroups import Cgroups

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_UNLIMITED = 1 << 62  # v1 reports "no limit" as a page-rounded LLONG_MAX
_READ_SIZE = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class Psi:
    """Pressure stall information of one resource: stalled ("full") and waiting ("some") time in µs."""

    some_total_us: int = 0
    some_avg10: float = 0.0
    some_avg60: float = 0.0
    some_avg300: float = 0.0
    full_total_us: int = 0
    full_avg10: float = 0.0
    full_avg60: float = 0.0
    full_avg300: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceIo:
    """Block I/O of a cgroup on one device."""

    major: int
    minor: int
    name: str = ""  # /dev/<name> when the kernel knows it (cAdvisor's device label)
    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Hugetlb:
    page_size: str  # "2MB", "1GB": the label kubelet and cAdvisor use
    usage: int = 0
    max_usage: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CgroupStats:
    """One reading of one cgroup. None where this host or this cgroup cannot tell (no such controller,
    the cgroup is gone); limits are None when unlimited."""

    timestamp_ns: int
    exists: bool = True
    full: bool = True  # False: only what stats need was read (CgroupReader.read)
    # cpu, in nanoseconds
    cpu_usage_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_ns: int | None = None
    # memory, in bytes
    memory_usage: int | None = None
    memory_max_usage: int | None = None
    memory_working_set: int | None = None
    memory_rss: int | None = None
    memory_cache: int | None = None
    memory_mapped_file: int | None = None
    memory_kernel: int | None = None
    memory_swap: int | None = None
    memory_failcnt: int | None = None
    pgfault: int | None = None  # this cgroup's own (v1); v2 counts children too
    pgmajfault: int | None = None
    pgfault_hierarchy: int | None = None
    pgmajfault_hierarchy: int | None = None
    oom_kills: int | None = None
    # limits (the spec as the kernel holds it)
    cpu_shares: int | None = None
    cpu_quota_us: int | None = None
    cpu_period_us: int | None = None
    memory_limit: int | None = None
    memory_reservation: int | None = None
    memory_swap_limit: int | None = None  # as cAdvisor's spec: memory+swap on v1, swap alone on v2
    swap_limit: int | None = None  # swap alone, both layouts
    pids_limit: int | None = None
    # tasks
    pids: tuple[int, ...] = ()
    threads: int | None = None
    pids_current: int | None = None
    file_descriptors: int | None = None
    sockets: int | None = None
    # block I/O, pressure, huge pages
    io: tuple[DeviceIo, ...] = ()
    psi: dict[str, Psi] = field(default_factory=dict)  # "cpu", "memory", "io"
    hugetlb: tuple[Hugetlb, ...] = ()

    @property
    def memory_available(self) -> int | None:
        if self.memory_limit is None or self.memory_working_set is None:
            return None
        return max(0, self.memory_limit - self.memory_working_set)

    @property
    def swap_available(self) -> int | None:
        if self.swap_limit is None or self.memory_swap is None:
            return None
        return max(0, self.swap_limit - self.memory_swap)


# ------------------------------------------------------------------------------------------ file reads


def read_text(path: str) -> str | None:
    """The whole file, or None when it cannot be read (cgroup gone, controller absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # cgroup and proc files hand a whole seq_file page set to one large read: a short read is the end
        # (saves a syscall per file, which is most of a reading's cost).
        data = os.read(fd, _READ_SIZE)
        if len(data) == _READ_SIZE:
            chunks = [data]
            while chunk := os.read(fd, _READ_SIZE):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data.decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= _UNLIMITED else value


def _max_value(text: str | None) -> int | None:
    """v2 style "max" or a number; None for "max" (no limit) and unreadable files."""
    if text is None or text.strip() == "max":
        return None
    return _int(text)


def parse_psi(text: str | None) -> Psi | None:
    """A {cpu,memory,io}.pressure file."""
    if not text:
        return None
    values: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        for item in rest.split():
            key, _, value = item.partition("=")
            with contextlib.suppress(ValueError):
                values[f"{kind}_{key}"] = float(value)
    return Psi(some_total_us=int(values.get("some_total", 0)), some_avg10=values.get("some_avg10", 0.0),
               some_avg60=values.get("some_avg60", 0.0), some_avg300=values.get("some_avg300", 0.0),
               full_total_us=int(values.get("full_total", 0)), full_avg10=values.get("full_avg10", 0.0),
               full_avg60=values.get("full_avg60", 0.0), full_avg300=values.get("full_avg300", 0.0))


def parse_blkio(service_bytes: str | None, serviced: str | None) -> tuple[DeviceIo, ...]:
    """v1 blkio.throttle.io_service_bytes_recursive and io_serviced_recursive, per device."""
    acc: dict[tuple[int, int], dict[str, int]] = {}
    for text, suffix in ((service_bytes, "_bytes"), (serviced, "")):
        for line in (text or "").splitlines():
            parts = line.split()
            if len(parts) != 3 or ":" not in parts[0] or parts[1] not in ("Read", "Write"):
                continue
            major, _, minor = parts[0].partition(":")
            with contextlib.suppress(ValueError):
                dev = acc.setdefault((int(major), int(minor)), {})
                dev[("read" if parts[1] == "Read" else "write") + suffix] = int(parts[2])
    return tuple(DeviceIo(major=ma, minor=mi, read_bytes=v.get("read_bytes", 0),
                          write_bytes=v.get("write_bytes", 0), reads=v.get("read", 0),
                          writes=v.get("write", 0))
                 for (ma, mi), v in sorted(acc.items()))


def parse_io_stat(text: str | None) -> tuple[DeviceIo, ...]:
    """v2 io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" per device."""
    out = []
    for line in (text or "").splitlines():
        dev, *items = line.split()
        major, _, minor = dev.partition(":")
        values = {}
        for item in items:
            key, _, value = item.partition("=")
            with contextlib.suppress(ValueError):
                values[key] = int(value)
        with contextlib.suppress(ValueError):
            out.append(DeviceIo(major=int(major), minor=int(minor), read_bytes=values.get("rbytes", 0),
                                write_bytes=values.get("wbytes", 0), reads=values.get("rios", 0),
                                writes=values.get("wios", 0)))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def block_device(major: int, minor: int) -> str:
    """/dev/<name> of a block device number ("" when the kernel does not list it)."""
    for line in (read_text(f"/sys/dev/block/{major}:{minor}/uevent") or "").splitlines():
        if line.startswith("DEVNAME="):
            return "/dev/" + line.removeprefix("DEVNAME=")
    return ""


def _named(devices: tuple[DeviceIo, ...]) -> tuple[DeviceIo, ...]:
    return tuple(dataclasses.replace(d, name=block_device(d.major, d.minor)) for d in devices)


def _pids(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in (text or "").split() if p.isdigit())


def _lines(text: str | None) -> int | None:
    return None if text is None else text.count("\n")


def process_files(pids: tuple[int, ...]) -> tuple[int | None, int | None]:
    """(open file descriptors, of which sockets) of the given processes."""
    if not pids:
        return 0, 0
    fds = sockets = 0
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            names = os.listdir(base)
        except OSError:
            continue  # exited meanwhile
        fds += len(names)
        for name in names:
            with contextlib.suppress(OSError):
                if os.readlink(f"{base}/{name}").startswith("socket:"):
                    sockets += 1
    return fds, sockets


def soft_open_files_limit(pid: int) -> int | None:
    """The soft RLIMIT_NOFILE of a process (cAdvisor's container_ulimits_soft{ulimit="max_open_files"})."""
    for line in (read_text(f"/proc/{pid}/limits") or "").splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files"):].split()[0]
            return -1 if soft == "unlimited" else _int(soft)
    return None


def hugepage_sizes() -> tuple[str, ...]:
    """The host's huge page sizes as cgroup file infixes ("2MB", "1GB")."""
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        kb = _int(name.removeprefix("hugepages-").removesuffix("kB"))
        if kb is None:
            continue
        out.append(f"{kb // (1024 * 1024)}GB" if kb >= 1024 * 1024 else f"{kb // 1024}MB" if kb >= 1024
                   else f"{kb}KB")
    return tuple(out)


# ----------------------------------------------------------------------------------------------- reading


class CgroupReader:
    """Reads CgroupStats of cgroup paths on the host's layout (probed once, by Cgroups)."""

    def __init__(self, cgroups: Cgroups) -> None:
        self.v2 = cgroups.v2
        h = cgroups.hierarchies
        self._root = str(h[""]) if cgroups.v2 else ""
        self._cpu = str(h["cpu"]) if "cpu" in h else None
        self._cpuacct = str(h["cpuacct"]) if "cpuacct" in h else None
        self._memory = str(h["memory"]) if "memory" in h else None
        self._pids = str(h["pids"]) if "pids" in h else None
        self._blkio = str(h["blkio"]) if "blkio" in h else None
        self._hugetlb = str(h["hugetlb"]) if "hugetlb" in h else None
        # Where the process lists are: any v1 hierarchy every container joins.
        self._tasks = self._pids or self._memory or self._cpu
        unified = str(h["unified"]) if "unified" in h else None
        self._psi_root = self._root if cgroups.v2 else unified
        self.hugepage_sizes = hugepage_sizes() if (self._hugetlb or cgroups.v2) else ()
        self.psi = bool(self._psi_root) and os.path.exists(f"{self._psi_root}/cpu.pressure")
        if cgroups.v2:
            controllers = (read_text(f"{self._root}/cgroup.controllers") or "").split()
            self.hugetlb = "hugetlb" in controllers and bool(self.hugepage_sizes)
        else:
            self.hugetlb = self._hugetlb is not None and bool(self.hugepage_sizes)

    def read(self, cgroup: str, *, full: bool = True) -> CgroupStats:
        """One reading of a cgroup (children included); exists=False when the cgroup is gone.

        full=False reads only what stats report (CPU time, memory, swap, process count, PSI: 6 to 9 files);
        full=True adds what metrics also show (CPU split and throttling, the memory breakdown, limits,
        threads, open files, block I/O, huge pages: 24 files on v1).
        """
        rel = "/" + cgroup.strip("/") if cgroup.strip("/") else ""
        now = time.time_ns()
        return self._read_v2(rel, now, full) if self.v2 else self._read_v1(rel, now, full)

    def _psi(self, rel: str) -> dict[str, Psi]:
        if not self.psi:
            return {}
        out = {}
        for kind in ("cpu", "memory", "io"):
            parsed = parse_psi(read_text(f"{self._psi_root}{rel}/{kind}.pressure"))
            if parsed is not None:
                out[kind] = parsed
        return out

    def _read_v1(self, rel: str, now: int, full: bool) -> CgroupStats:
        def f(base: str | None, name: str) -> str | None:
            return None if base is None else read_text(f"{base}{rel}/{name}")

        procs = f(self._tasks, "cgroup.procs")
        if procs is None:
            return CgroupStats(timestamp_ns=now, exists=False)
        pids = _pids(procs)
        stat = _kv(f(self._memory, "memory.stat"))
        usage = _int(f(self._memory, "memory.usage_in_bytes"))
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        limit = _limit(_int(f(self._memory, "memory.limit_in_bytes")))
        memsw = _limit(_int(f(self._memory, "memory.memsw.limit_in_bytes")))
        basic = CgroupStats(
            timestamp_ns=now, full=False, pids=pids, psi=self._psi(rel),
            cpu_usage_ns=_int(f(self._cpuacct, "cpuacct.usage")),
            memory_usage=usage, memory_working_set=None if usage is None else max(0, usage - inactive),
            memory_rss=stat.get("total_rss"), memory_cache=stat.get("total_cache"),
            memory_mapped_file=stat.get("total_mapped_file"),
            memory_swap=stat.get("total_swap", 0 if stat else None),
            pgfault=stat.get("pgfault"), pgmajfault=stat.get("pgmajfault"),
            pgfault_hierarchy=stat.get("total_pgfault"), pgmajfault_hierarchy=stat.get("total_pgmajfault"),
            memory_limit=limit, memory_swap_limit=memsw,
            swap_limit=None if memsw is None or limit is None else max(0, memsw - limit))
        if not full:
            return basic
        cpuacct_stat = _kv(f(self._cpuacct, "cpuacct.stat"))
        cpu_stat = _kv(f(self._cpu, "cpu.stat"))
        quota = _int(f(self._cpu, "cpu.cfs_quota_us"))
        fds, sockets = process_files(pids)
        hugetlb = tuple(Hugetlb(page_size=size,
                                usage=_int(f(self._hugetlb, f"hugetlb.{size}.usage_in_bytes")) or 0,
                                max_usage=_int(f(self._hugetlb, f"hugetlb.{size}.max_usage_in_bytes")))
                        for size in self.hugepage_sizes) if self._hugetlb else ()
        tick = 1_000_000_000 // _CLK_TCK
        return dataclasses.replace(
            basic, full=True,
            cpu_user_ns=cpuacct_stat["user"] * tick if "user" in cpuacct_stat else None,
            cpu_system_ns=cpuacct_stat["system"] * tick if "system" in cpuacct_stat else None,
            cpu_periods=cpu_stat.get("nr_periods"), cpu_throttled_periods=cpu_stat.get("nr_throttled"),
            cpu_throttled_ns=cpu_stat.get("throttled_time"),
            memory_max_usage=_int(f(self._memory, "memory.max_usage_in_bytes")),
            memory_kernel=_int(f(self._memory, "memory.kmem.usage_in_bytes")),
            memory_failcnt=_int(f(self._memory, "memory.failcnt")),
            oom_kills=_kv(f(self._memory, "memory.oom_control")).get("oom_kill"),
            cpu_shares=_int(f(self._cpu, "cpu.shares")),
            cpu_quota_us=quota if quota is not None and quota > 0 else None,
            cpu_period_us=_int(f(self._cpu, "cpu.cfs_period_us")),
            memory_reservation=_limit(_int(f(self._memory, "memory.soft_limit_in_bytes"))),
            pids_limit=_max_value(f(self._pids, "pids.max")), threads=_lines(f(self._tasks, "tasks")),
            pids_current=_int(f(self._pids, "pids.current")), file_descriptors=fds, sockets=sockets,
            io=_named(parse_blkio(f(self._blkio, "blkio.throttle.io_service_bytes_recursive"),
                                  f(self._blkio, "blkio.throttle.io_serviced_recursive"))),
            hugetlb=hugetlb)

    def _read_v2(self, rel: str, now: int, full: bool) -> CgroupStats:
        base = f"{self._root}{rel}"

        def f(name: str) -> str | None:
            return read_text(f"{base}/{name}")

        procs = f("cgroup.procs")
        if procs is None:
            return CgroupStats(timestamp_ns=now, exists=False)
        pids = _pids(procs)
        cpu = _kv(f("cpu.stat"))
        stat = _kv(f("memory.stat"))
        usage = _int(f("memory.current"))
        swap_max = _max_value(f("memory.swap.max"))
        usec = cpu.get("usage_usec")
        basic = CgroupStats(
            timestamp_ns=now, full=False, pids=pids, psi=self._psi(rel),
            cpu_usage_ns=None if usec is None else usec * 1000,
            cpu_user_ns=cpu["user_usec"] * 1000 if "user_usec" in cpu else None,
            cpu_system_ns=cpu["system_usec"] * 1000 if "system_usec" in cpu else None,
            cpu_periods=cpu.get("nr_periods"), cpu_throttled_periods=cpu.get("nr_throttled"),
            cpu_throttled_ns=cpu["throttled_usec"] * 1000 if "throttled_usec" in cpu else None,
            memory_usage=usage,
            memory_working_set=None if usage is None else max(0, usage - stat.get("inactive_file", 0)),
            memory_rss=stat.get("anon"), memory_cache=stat.get("file"),
            memory_mapped_file=stat.get("file_mapped"),
            memory_swap=_int(f("memory.swap.current")),
            pgfault=stat.get("pgfault"), pgmajfault=stat.get("pgmajfault"),
            pgfault_hierarchy=stat.get("pgfault"), pgmajfault_hierarchy=stat.get("pgmajfault"),
            memory_limit=_max_value(f("memory.max")), memory_swap_limit=swap_max, swap_limit=swap_max)
        if not full:
            return basic
        events = _kv(f("memory.events"))
        quota, _, period = (f("cpu.max") or "").strip().partition(" ")
        weight = _int(f("cpu.weight"))
        kernel = stat.get("kernel")
        if kernel is None and "kernel_stack" in stat:
            kernel = stat.get("kernel_stack", 0) + stat.get("slab", 0) + stat.get("sock", 0) + \
                stat.get("vmalloc", 0) + stat.get("percpu", 0) + stat.get("pagetables", 0)
        fds, sockets = process_files(pids)
        hugetlb = tuple(Hugetlb(page_size=size, usage=_int(f(f"hugetlb.{size}.current")) or 0)
                        for size in self.hugepage_sizes) if self.hugetlb else ()
        return dataclasses.replace(
            basic, full=True, memory_max_usage=_int(f("memory.peak")), memory_kernel=kernel,
            memory_failcnt=events.get("max"), oom_kills=events.get("oom_kill"),
            # The inverse of the shares -> weight conversion that runc and crib's write_limits apply.
            cpu_shares=None if weight is None else 2 + ((weight - 1) * 262142) // 9999,
            cpu_quota_us=_int(quota) if quota not in ("", "max") else None,
            cpu_period_us=_int(period) if period else None,
            memory_reservation=_int(f("memory.low")) or None, pids_limit=_max_value(f("pids.max")),
            threads=_lines(f("cgroup.threads")), pids_current=_int(f("pids.current")),
            file_descriptors=fds, sockets=sockets, io=_named(parse_io_stat(f("io.stat"))), hugetlb=hugetlb)


__all__ = ["CgroupReader", "CgroupStats", "DeviceIo", "Hugetlb", "Psi", "block_device", "hugepage_sizes",
           "parse_blkio", "parse_io_stat", "parse_psi", "process_files", "read_text", "soft_open_files_limit"]
