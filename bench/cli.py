"""`python -m bench cli`: start-up latency of `crib ps -q` against `crictl ps -q`, whole process, same daemon.

People run these in loops (`watch crib ps`, scripts polling a container), so what counts is the whole
process: interpreter or Go runtime start, imports, connect, one ListContainers, print, exit. Both clients
run against the same crib daemon (with a few running containers), alternating, then both against
containerd's CRI plugin with nothing running. `python -c pass` (the interpreter's own floor) and
`crib --version` (no gRPC) are timed too, to show where crib's time goes.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import harness
from tests.fixtures.containerd import Containerd
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.images import busybox_layer, host_platform
from tests.fixtures.oci import build_image, write_oci_layout_tar

CRIB = str(Path(sys.executable).parent / "crib")
IMAGE = "example.com/bench-cli:1"


def _seed(endpoint: str, work: Path, tag: str, containers: int) -> None:
    """A pod with `containers` sleeping containers, made with the crib CLI itself."""
    tar = write_oci_layout_tar(work / "image.tar", {IMAGE: build_image([busybox_layer()],
                                                                         platform=host_platform())})
    base = [CRIB, "-r", endpoint]
    subprocess.run([*base, "image", "import", str(tar)], check=True, capture_output=True, timeout=120)
    pod = work / "pod.json"
    pod.write_text(json.dumps({"metadata": {"name": "bench", "namespace": "bench", "uid": uuid.uuid4().hex},
                               "linux": {"cgroup_parent": f"/{tag}/bench"}}))
    pod_id = subprocess.run([*base, "runp", str(pod)], check=True, capture_output=True, text=True,
                            timeout=120).stdout.strip()
    for n in range(containers):
        ctr = work / f"c{n}.json"
        ctr.write_text(json.dumps({"metadata": {"name": f"sleeper-{n}"}, "image": {"image": IMAGE},
                                   "command": ["sleep", "3600"]}))
        cid = subprocess.run([*base, "create", pod_id, str(ctr), str(pod)], check=True, capture_output=True,
                             text=True, timeout=120).stdout.strip()
        subprocess.run([*base, "start", cid], check=True, capture_output=True, timeout=120)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(argv: list[str]) -> tuple[float, float, str]:
    """Wall time and CPU time (user + system) of one whole process, and what it printed."""
    cpu, started = _cpu(), time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr}")
    return seconds, cpu, out.stdout


def _compare(title: str, commands: dict[str, list[str]], runs: int) -> dict[str, Any]:
    """Run each command `runs` times, alternating the order every round; check they print the same."""
    results: dict[str, list[harness.Sample]] = {name: [] for name in commands}
    outputs: dict[str, str] = {}
    names = list(commands)
    for run in range(runs):
        for name in names if run % 2 == 0 else reversed(names):
            seconds, cpu, out = _time(commands[name])
            results[name].append(harness.Sample(seconds=seconds, extra={"cpu_s": cpu}))
            outputs[name] = out
    if "crib" in outputs and "crictl" in outputs:
        assert sorted(outputs["crib"].split()) == sorted(outputs["crictl"].split()), outputs
    summary = harness.report(title, results, baseline="crictl")
    # CPU time is what a busy machine does not inflate much (wall time there includes waiting for a core).
    for name, samples in results.items():
        summary[name].pop("peak_rss_mib", None)
        summary[name]["cpu_median_s"] = harness.median([s.extra["cpu_s"] for s in samples])
        print(f"  {name:<12} CPU (user+sys) median {summary[name]['cpu_median_s'] * 1000:6.1f} ms")
    if "crib" in summary and "crictl" in summary:
        summary["cpu_ratio"] = summary["crib"]["cpu_median_s"] / summary["crictl"]["cpu_median_s"]
        print(f"  ratio crib/crictl (CPU median): {summary['cpu_ratio']:.2f}")
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cli", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--containers", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write the summary as JSON")
    args = parser.parse_args(argv)
    crictl = shutil.which("crictl")
    if crictl is None:
        print("crictl is not on PATH", file=sys.stderr)
        return 1
    tag = f"cribbench{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="crib-bench-cli-"))
    summary: dict[str, Any] = {}
    daemon = CribDaemon(work / "crib")
    try:
        daemon.start()
        _seed(daemon.endpoint, work, tag, args.containers)
        ep = daemon.endpoint
        summary["floor"] = _compare("interpreter floor and crib without gRPC", {
            "python -c pass": [sys.executable, "-c", "pass"], "crib --version": [CRIB, "--version"]},
            args.runs)
        summary["crib_daemon"] = _compare(
            f"`ps -q` against crib ({args.containers} running containers), {args.runs} runs each",
            {"crib": [CRIB, "-r", ep, "ps", "-q"], "crictl": [crictl, "-r", ep, "ps", "-q"]}, args.runs)
        subprocess.run([CRIB, "-r", ep, "rmp", "-f", "-a"], check=True, capture_output=True, timeout=120)
    finally:
        daemon.stop()
        harness.remove_cgroups(tag)
    short = Path(tempfile.mkdtemp(prefix="ctrd-bench-"))
    try:
        with Containerd(short, cni_conf_dir=str(work / "no-cni")) as ctd:
            summary["containerd_daemon"] = _compare(
                f"`ps -q` against containerd (nothing running), {args.runs} runs each",
                {"crib": [CRIB, "-r", ctd.endpoint, "ps", "-q"],
                 "crictl": [crictl, "-r", ctd.endpoint, "ps", "-q"]}, args.runs)
    finally:
        shutil.rmtree(short, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


__all__ = ["main"]
