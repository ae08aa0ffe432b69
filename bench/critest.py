"""critest -benchmark (the official CRI benchmark), crib vs the test bed's containerd, rounds alternating.

    flock /work/coord/critest.lock .venv/bin/python -m bench critest [--rounds 2] [--testbed DIR]
        [--crib-src DIR] [--json FILE]

Needs the offline conformance bed (its README: registry on 127.0.0.1:5000 with critest's images,
containerd-anchor as the reference runtime) and `critest` on PATH. Each round runs the bed's
`run-bench.sh` once against a crib daemon started here (own root, runroot and socket, the bed's
registries.conf, and a private CNI conflist of the same shape as the bed's: bridge with gateway, ipMasq
and promiscMode + host-local + portmap with snat + loopback, on a bridge and subnet of its own) and
once against containerd-anchor, the order alternating between rounds. crib is stopped and its CNI bed
removed at the end. Per CRI call it prints the median over all rounds' samples (critest's 50 iterations
per round), crib / containerd, and the ratio; `--crib-src` benchmarks another checkout's src/ (before/after
figures from one command line).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/critest.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from tests.fixtures.cni import Testbed
from tests.fixtures.daemon import CribDaemon

CONTAINERD = "unix:///run/containerd-anchor/containerd.sock"
FILES = ("pod_benchmark_data.json", "container_benchmark_data.json", "image_lifecycle_benchmark_data.json",
         "image_listing_benchmark_data.json")
# Derived rows: the sum of several calls of one iteration, as the issue states its goals.
SUMS = {"CreateContainer+StartContainer": ("CreateContainer", "StartContainer")}


def samples(results: Path) -> dict[str, list[float]]:
    """{operation: [ms, ...]} from one run-bench.sh output directory."""
    out: dict[str, list[float]] = {}
    for name in FILES:
        path = results / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        ops = data["operationsNames"]
        for point in data["datapoints"]:
            durations = point["operationsDurationsNs"]
            if len(durations) != len(ops):
                continue
            by_op = dict(zip(ops, durations, strict=True))
            for op, ns in by_op.items():
                out.setdefault(op, []).append(ns / 1e6)
            for label, parts in SUMS.items():
                if all(p in by_op for p in parts):
                    out.setdefault(label, []).append(sum(by_op[p] for p in parts) / 1e6)
    return out


def run_bench(testbed: Path, endpoint: str, name: str, results: Path) -> dict[str, list[float]]:
    env = {**os.environ, "TESTBED_RESULTS": str(results)}
    done = subprocess.run([str(testbed / "run-bench.sh"), endpoint, name], env=env, capture_output=True,
                          text=True, timeout=1800, check=False)
    if done.returncode != 0:
        print(f"  run-bench.sh {name} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}",
              flush=True)
    return samples(results / f"bench-{name}")


def start_crib(workdir: Path, testbed: Path, bed: Testbed, tag: str) -> CribDaemon:
    bed.write_conflist([{**bed.bridge_plugin(hairpinMode=False, promiscMode=True)},
                        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
                        {"type": "loopback"}])
    config: dict[str, Any] = {"network": bed.network_config(),
                              "image": {"registries_conf": str(testbed / "crib" / "registries.conf")},
                              "runtime": {"default_cgroup_parent": f"/{tag}"}}
    daemon = CribDaemon(workdir / "crib", config)
    daemon.extra_args = ["--log-level", "info"]
    return daemon.start()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench critest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--testbed", type=Path, default=Path("/work/shared/testbed"))
    parser.add_argument("--crib-src", type=Path, help="run crib from this src/ directory (PYTHONPATH)")
    parser.add_argument("--json", type=Path, help="write the medians here")
    args = parser.parse_args(argv)
    harness.use_crib_src(args.crib_src)
    tag = f"cribcrit{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="crib-critest-"))
    bed = Testbed(work / "cni", tag)
    daemon = start_crib(work, args.testbed, bed, tag)
    runs: dict[str, dict[str, list[float]]] = {"crib": {}, "containerd": {}}
    try:
        for round_ in range(args.rounds):
            order = [("crib", daemon.endpoint), ("containerd", CONTAINERD)]
            for name, endpoint in order if round_ % 2 == 0 else reversed(order):
                print(f"round {round_ + 1}/{args.rounds}: {name}", flush=True)
                got = run_bench(args.testbed, endpoint, name, work / f"r{round_}")
                for op, values in got.items():
                    runs[name].setdefault(op, []).extend(values)
        rss = harness.rss_kb(daemon.proc.pid) / 1024 if daemon.proc is not None else 0.0
    finally:
        subprocess.run(["crictl", "--runtime-endpoint", daemon.endpoint, "rmp", "-fa"], capture_output=True,
                       timeout=300, check=False)
        daemon.stop()
        bed.cleanup()
        harness.remove_cgroups(tag)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ncritest -benchmark, {args.rounds} round(s), medians in ms "
          f"(crib daemon RSS after: {rss:.1f} MiB)\n")
    print("| operation | n | crib | containerd | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    summary = {}
    for op in sorted(set(runs["crib"]) | set(runs["containerd"])):
        c, d = runs["crib"].get(op, []), runs["containerd"].get(op, [])
        if not c or not d:
            continue
        mc, md = statistics.median(c), statistics.median(d)
        summary[op] = {"crib_ms": mc, "containerd_ms": md, "ratio": mc / md, "n": min(len(c), len(d))}
        print(f"| {op} | {min(len(c), len(d))} | {mc:.2f} | {md:.2f} | {mc / md:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
