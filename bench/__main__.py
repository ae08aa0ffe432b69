"""`python -m bench NAME [options]`: run one benchmark (see bench/README.md)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "pull": ("bench.pull", "PullImage of a 5-layer ~200 MB image, crib vs containerd"),
    "runtime": ("bench.runtime", "pod/container lifecycle latencies and per-pod memory, crib vs containerd"),
    "network": ("bench.network", "runp + stopp + rmp on a CNI bridge, with and without hostPort"),
    "node": ("bench.node", "100 pods x 3 containers, kubelet-like relists, stats and churn: CPU, p99, RSS"),
    "calls": ("bench.calls", "status and list calls at 1/100/500 objects: latency and daemon CPU per call"),
    "critest": ("bench.critest", "critest -benchmark (the official one), crib vs the test bed's containerd"),
    "nri": ("bench.nri", "RunPodSandbox/CreateContainer: NRI off, on, on + a no-op plugin; containerd"),
    "network-watch": ("bench.network_watch", "CNI conf-dir watcher: poll cost, config fixed -> NetworkReady"),
    "streaming": ("bench.streaming", "exec round trip and stdout MiB/s, port-forward MiB/s and conn/s"),
    "cli": ("bench.cli", "start-up of `crib ps -q` vs `crictl ps -q`, whole process, same daemon"),
    "metrics": ("bench.metrics", "stats, CRI metrics and a Prometheus scrape with 100 running containers"),
    "soak": ("bench.soak", "chaos soak: ~30 churning pods under random faults, invariants checked"),
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print("usage: python -m bench NAME [options]\n\nbenchmarks:")
        for name, (_, what) in BENCHMARKS.items():
            print(f"  {name:<14} {what}")
        return 2
    module = importlib.import_module(BENCHMARKS[sys.argv[1]][0])
    return int(module.main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
