"""Node scale: a kubelet-like client against 100 pods x 3 containers, crib vs containerd.

    .venv/bin/python -m bench node [--pods 100] [--containers 3] [--seconds 60] [--rounds 2] [--churn 5]
        [--json FILE] [--crib-src DIR]

Both runtimes run side by side (bench.runtime.pair: own roots, a CNI bridge network each, busybox from a
private registry) and each gets `--pods` kubelet-like pods (a PID namespace per container, a cgroupfs parent
each) with `--containers` running `sleep` containers. Then, one runtime at a time for `--seconds`, rounds
alternating the order (A B, B A, ...), a client does what kubelet does to a runtime:

    every second      PLEG relist: ListPodSandbox + ListContainers (timed together: "relist"), then
                      PodSandboxStatus + ContainerStatus of each container for every pod whose
                      containers changed since the last relist (kubelet's generic PLEG)
    every 10 seconds  ListPodSandboxStats (the summary API)
    every second      churn: `--churn` pods replaced (the oldest stopped and removed, a new one run with its
                      containers started), by 4 worker threads as kubelet's pod workers do

Reported per runtime: the daemon process's CPU seconds per minute (utime + stime of the daemon alone:
not its conmons or shims; the programs it runs and waits for, runc and CNI plugins, apart as "children"),
relist p50 / p99, status calls made, churn achieved (pods/s), and the daemon's RSS before the pods, after
them, and at the end of each phase (growth over the phases is what a leak would show).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/node.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from bench import harness
from bench.runtime import Runtime, pair
from crib._proto.runtime.v1 import api_pb2 as api

_TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> tuple[float, float]:
    """(own utime + stime, waited-for children's cutime + cstime) of one process, in seconds."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / _TICK, (int(f[13]) + int(f[14])) / _TICK


class Node:
    """One runtime's pods, as the churn workers and the PLEG loop share them."""

    def __init__(self, runtime: Runtime, containers: int) -> None:
        self.runtime = runtime
        self.containers = containers
        self.lock = threading.Lock()
        self.pods: collections.deque[tuple[str, list[str]]] = collections.deque()
        self.churned = 0
        self.errors: list[str] = []

    def add_pod(self) -> None:
        sid, cfg = self.runtime.run_pod()
        cids = [self.runtime.create_start(sid, cfg, ["sleep", "3600"]) for _ in range(self.containers)]
        with self.lock:
            self.pods.append((sid, cids))

    def remove_pod(self, sid: str, cids: list[str]) -> None:
        for cid in cids:
            self.runtime.remove_container(cid)
        self.runtime.remove_pod(sid)

    def replace_one(self) -> None:
        try:
            with self.lock:
                sid, cids = self.pods.popleft()
            self.remove_pod(sid, cids)
            self.add_pod()
            with self.lock:
                self.churned += 1
        except Exception as exc:  # reported, the run goes on
            self.errors.append(f"{type(exc).__name__}: {exc}"[:300])

    def remove_all(self) -> None:
        while self.pods:
            sid, cids = self.pods.popleft()
            try:
                self.remove_pod(sid, cids)
            except Exception as exc:
                self.errors.append(f"cleanup {sid}: {exc}"[:300])


def _snapshot(rt: Any) -> tuple[set[str], dict[str, dict[str, int]]]:
    pods = rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=30).items
    containers = rt.ListContainers(api.ListContainersRequest(), timeout=30).containers
    by_pod: dict[str, dict[str, int]] = {p.id: {} for p in pods}
    for c in containers:
        by_pod.setdefault(c.pod_sandbox_id, {})[c.id] = c.state
    return {p.id for p in pods}, by_pod


def phase(node: Node, seconds: float, churn: int) -> dict[str, Any]:
    """The kubelet-like client against one runtime for `seconds`; see the module note."""
    rt, pid = node.runtime.rt, node.runtime.daemon.proc.pid
    relists: list[float] = []
    status_calls = stats_errors = 0
    node.churned = 0
    own0, children0 = cpu(pid)
    started = time.monotonic()
    _, previous = _snapshot(rt)
    next_stats = started
    workers = ThreadPoolExecutor(4)
    pending: list[Future[None]] = []
    try:
        tick = started
        while tick - started < seconds:
            # A runtime that cannot keep up is not flooded: at most two seconds' worth waits in line.
            pending = [f for f in pending if not f.done()]
            for _ in range(max(0, min(churn, 2 * churn - len(pending)))):
                pending.append(workers.submit(node.replace_one))
            t0 = time.perf_counter()
            _, current = _snapshot(rt)
            relists.append(time.perf_counter() - t0)
            for sid, states in current.items():
                if previous.get(sid) != states:  # a pod whose containers changed: kubelet asks for statuses
                    try:
                        rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=30)
                        status_calls += 1
                        for cid in states:
                            rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid), timeout=30)
                            status_calls += 1
                    except Exception:  # removed meanwhile by churn: as kubelet, try again next relist
                        continue
            previous = current
            if time.monotonic() >= next_stats:
                try:
                    rt.ListPodSandboxStats(api.ListPodSandboxStatsRequest(), timeout=60)
                except grpc.RpcError as exc:  # containerd fails it when churn removes a pod meanwhile
                    stats_errors += 1
                    node.errors.append(f"ListPodSandboxStats: {exc.code().name}")
                next_stats += 10
            tick += 1.0
            time.sleep(max(0.0, tick - time.monotonic()))
        elapsed = time.monotonic() - started
        own1, children1 = cpu(pid)
    finally:
        workers.shutdown(wait=True, cancel_futures=True)
    relists.sort()
    return {
        "seconds": elapsed,
        "cpu_s_per_min": (own1 - own0) * 60 / elapsed,
        "children_cpu_s_per_min": (children1 - children0) * 60 / elapsed,
        "relist_p50_ms": harness.median(relists) * 1000,
        "relist_p99_ms": relists[max(0, int(len(relists) * 0.99) - 1)] * 1000,
        "relists": len(relists),
        "status_calls": status_calls,
        "stats_errors": stats_errors,
        "churn_pods_per_s": node.churned / elapsed,
        "rss_mib": _own_rss_mib(pid),
    }


def _own_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--containers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of one phase (one runtime)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--churn", type=int, default=5, help="pods replaced per second")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--crib-src", type=Path, help="run crib from this src/ (before/after figures)")
    args = parser.parse_args(argv)
    harness.use_crib_src(args.crib_src)
    results: dict[str, Any] = {"phases": []}
    with tempfile.TemporaryDirectory(prefix="crib-bench-node-") as tmp, \
            pair(Path(tmp), subnet_prefix=22) as (runtimes, _):
        nodes = [Node(r, args.containers) for r in runtimes]
        try:
            for n in nodes:
                idle = _own_rss_mib(n.runtime.daemon.proc.pid)
                began = time.monotonic()
                with ThreadPoolExecutor(4) as workers:
                    for future in [workers.submit(n.add_pod) for _ in range(args.pods)]:
                        future.result()
                loaded = _own_rss_mib(n.runtime.daemon.proc.pid)
                results[n.runtime.name] = {"rss_idle_mib": idle, "rss_loaded_mib": loaded}
                print(f"{n.runtime.name}: {args.pods} pods x {args.containers} containers in "
                      f"{time.monotonic() - began:.0f}s; daemon RSS {idle:.1f} -> {loaded:.1f} MiB",
                      flush=True)
            for round_ in range(args.rounds):
                for n in nodes if round_ % 2 == 0 else list(reversed(nodes)):
                    got = phase(n, args.seconds, args.churn)
                    got["runtime"] = n.runtime.name
                    results["phases"].append(got)
                    print(f"  round {round_ + 1} {n.runtime.name:<11} CPU {got['cpu_s_per_min']:5.2f} s/min "
                          f"(children {got['children_cpu_s_per_min']:5.2f}) | relist p50 "
                          f"{got['relist_p50_ms']:6.2f} ms p99 {got['relist_p99_ms']:7.2f} ms | "
                          f"{got['status_calls']} status calls | churn {got['churn_pods_per_s']:.2f} "
                          f"pods/s | RSS {got['rss_mib']:.1f} MiB", flush=True)
        finally:
            for n in nodes:
                n.remove_all()
                if n.errors:
                    print(f"  {n.runtime.name}: {len(n.errors)} errors, first: {n.errors[0]}")
    print("\nsummary (medians over the phases)")
    for name in ("crib", "containerd"):
        ph = [p for p in results["phases"] if p["runtime"] == name]
        summary = {key: harness.median([p[key] for p in ph]) for key in
                   ("cpu_s_per_min", "children_cpu_s_per_min", "relist_p50_ms", "relist_p99_ms",
                    "churn_pods_per_s")}
        summary["rss_growth_mib"] = ph[-1]["rss_mib"] - results[name]["rss_loaded_mib"]
        results[name].update(summary)
        r = results[name]
        print(f"  {name:<11} CPU {summary['cpu_s_per_min']:5.2f} s/min | relist p50 "
              f"{summary['relist_p50_ms']:6.2f} ms p99 {summary['relist_p99_ms']:7.2f} ms | churn "
              f"{summary['churn_pods_per_s']:.2f} pods/s | RSS idle {r['rss_idle_mib']:.1f}, loaded "
              f"{r['rss_loaded_mib']:.1f}, growth over the phases {summary['rss_growth_mib']:+.1f} MiB")
    c, d = results["crib"], results["containerd"]
    print(f"  ratio crib/containerd: CPU {c['cpu_s_per_min'] / d['cpu_s_per_min']:.2f}, relist p50 "
          f"{c['relist_p50_ms'] / d['relist_p50_ms']:.2f}, p99 {c['relist_p99_ms'] / d['relist_p99_ms']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
