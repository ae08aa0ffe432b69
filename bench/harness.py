"""What every crib-vs-containerd benchmark needs: both runtimes on temporary roots, one client, interleaved
runs, robust statistics, ratios, and the peak memory of a process tree.

    from bench import harness
    contenders = [harness.crib(config={...}), harness.containerd(mirrors={...})]
    results = harness.interleaved(contenders, runs=5, measure=lambda rt: rt.images.PullImage(...))
    harness.report("pull", results, baseline="containerd")

Both runtimes are started by the test fixtures (tests/fixtures/daemon.py, tests/fixtures/containerd.py),
each with its own temporary root, state and socket, and stopped by PID. A contender is started fresh for
every run (`fresh=True`, the default), so each run begins with empty stores; runs alternate between the
contenders (A B, B A, A B, ...) so that drift on the machine (page cache, other load) hits both alike.
The measured call goes through the same generated gRPC stubs for every runtime.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.containerd import Containerd
from tests.fixtures.daemon import CribDaemon

# ------------------------------------------------------------------------------------------------ memory


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid: int) -> int:
    """Resident set of pid and its descendants now, in KiB."""
    return sum(_status_kb(p, "VmRSS") for p in tree(pid))


def hwm_kb(pid: int) -> int:
    """The kernel's own peak resident set (VmHWM) of one process, in KiB."""
    return _status_kb(pid, "VmHWM")


class PeakRss:
    """Samples the RSS of a process tree in a thread; `peak_kb` is the highest sum seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, rss_kb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, rss_kb(self.pid), hwm_kb(self.pid))


# --------------------------------------------------------------------------------------------- runtimes


@dataclass
class Contender:
    """A runtime under test: how to start one on a fresh directory, and what it is called."""

    name: str
    start: Callable[[Path], Any]  # returns an object with .images, .runtime, .proc (Popen) and .stop()
    fresh: bool = True


def use_crib_src(src: Path | None) -> None:
    """Run crib daemons from another checkout's src/ (PYTHONPATH of the daemons this process starts), for
    before/after figures from one command line; None keeps this checkout's."""
    if src is not None:
        os.environ["PYTHONPATH"] = str(src.resolve())


def crib(config: dict[str, Any] | None = None, name: str = "crib") -> Contender:
    """crib with a test config (its own root, runroot and socket under the run's directory)."""
    def start(workdir: Path) -> CribDaemon:
        d = CribDaemon(workdir, config)
        d.extra_args = []
        d.start()
        return d

    return Contender(name=name, start=start)


def containerd(mirrors: dict[str, str] | None = None, name: str = "containerd") -> Contender:
    """containerd with its CRI plugin, registry mirrors (hosts.toml) for local registries, no CNI config."""
    def start(workdir: Path) -> Containerd:
        return Containerd(workdir, cni_conf_dir=str(workdir / "no-cni"), mirrors=mirrors).start()

    return Contender(name=name, start=start)


@dataclass
class Sample:
    seconds: float
    peak_rss_kb: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _running(contender: Contender, base: Path, run: int) -> Iterator[Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{contender.name}-{run}-", dir=base))
    rt = contender.start(workdir)
    try:
        yield rt
    finally:
        rt.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def interleaved(contenders: list[Contender], runs: int, measure: Callable[[Any], Any],
                base: Path | None = None, verbose: bool = True) -> dict[str, list[Sample]]:
    """Run measure(runtime) `runs` times per contender, alternating the order every round.

    measure gets the started runtime (its .images / .runtime stubs) and is timed with perf_counter;
    whatever it returns (a dict) is kept as Sample.extra. The runtime's process tree RSS is sampled
    meanwhile.
    """
    results: dict[str, list[Sample]] = {c.name: [] for c in contenders}
    owned = base is None
    base = Path(tempfile.mkdtemp(prefix="crib-bench-")) if base is None else base
    try:
        for run in range(runs):
            order = contenders if run % 2 == 0 else list(reversed(contenders))
            for contender in order:
                with _running(contender, base, run) as rt, PeakRss(rt.proc.pid) as rss:
                    started = time.perf_counter()
                    extra = measure(rt)
                    seconds = time.perf_counter() - started
                sample = Sample(seconds=seconds, peak_rss_kb=rss.peak_kb,
                                extra=extra if isinstance(extra, dict) else {})
                results[contender.name].append(sample)
                if verbose:
                    print(f"  run {run + 1}/{runs} {contender.name:<11} {seconds:7.3f}s  "
                          f"peak RSS {sample.peak_rss_kb / 1024:6.1f} MiB", flush=True)
    finally:
        if owned:
            shutil.rmtree(base, ignore_errors=True)
    return results


# ------------------------------------------------------------------------------------------- statistics


def remove_cgroups(tag: str) -> None:
    """Remove the (empty) cgroup trees a benchmark's pods used, named /<tag>/... in every hierarchy."""
    for base in Path("/sys/fs/cgroup").iterdir():
        top = base / tag
        if top.is_dir():
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p95(xs: list[float]) -> float:
    """Nearest-rank 95th percentile (with 5 runs: the slowest)."""
    ordered = sorted(xs)
    return ordered[max(0, min(len(ordered) - 1, -(-95 * len(ordered) // 100) - 1))]


def report(title: str, results: dict[str, list[Sample]], baseline: str,
           subject: str = "crib") -> dict[str, Any]:
    """Print medians, p95, min/max, the ratio subject/baseline and the subject's peak RSS; return them."""
    print(f"\n{title}")
    print(f"  {'runtime':<12}{'median':>9}{'p95':>9}{'min':>9}{'max':>9}{'peak RSS':>12}")
    summary: dict[str, Any] = {}
    for name, samples in results.items():
        secs = [s.seconds for s in samples]
        peak = max(s.peak_rss_kb for s in samples) / 1024
        summary[name] = {"median_s": median(secs), "p95_s": p95(secs), "min_s": min(secs), "max_s": max(secs),
                         "peak_rss_mib": peak, "runs": secs}
        print(f"  {name:<12}{median(secs):8.3f}s{p95(secs):8.3f}s{min(secs):8.3f}s{max(secs):8.3f}s"
              f"{peak:9.1f} MiB")
    if subject in summary and baseline in summary:
        ratio = summary[subject]["median_s"] / summary[baseline]["median_s"]
        summary["ratio"] = ratio
        verdict = "crib is faster" if ratio < 1 else "crib is slower"
        print(f"  ratio {subject}/{baseline} (median): {ratio:.2f}  ({verdict})")
    return summary


__all__ = ["Contender", "PeakRss", "Sample", "containerd", "crib", "hwm_kb", "interleaved", "median", "p95",
           "report", "rss_kb", "tree"]
