"""Status and list calls at scale: latency and daemon CPU per call, crib vs containerd, call by call.

    .venv/bin/python -m bench calls [--scales 1,100,500] [--calls 300] [--json FILE]

Both runtimes run side by side (bench.runtime.pair: own roots, a CNI bridge network each, busybox and a
pause image from a private registry). For each scale N, in increasing order, each runtime is grown to N
kubelet-like pods with one running `sleep` container each and N extra images (busybox plus one tiny layer of
its own, so each is a distinct image). Then every polled call is made `--calls` times per runtime,
alternating crib and containerd call by call through the same stubs, after 20 untimed calls each; the status
calls pick a random object each time (the two stats calls: a tenth as many, at least 20). Reported per call:
client-side p50 and p99 latency, and the daemon's own CPU time per call (utime + stime of the daemon process
over the series, divided by the calls; so containerd's shims and crib's conmons are not counted, neither do
any work for these calls), and the crib/containerd ratio of the p50s. Version is there as the floor of a
gRPC round trip through each daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

if __package__ in (None, ""):  # `python bench/calls.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.runtime import Runtime, pair
from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.oci import Layer, build_image

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class Objects:
    """What one runtime holds at the current scale: pod ids, container ids, image references."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.pods: list[str] = []
        self.containers: list[str] = []
        self.images: list[str] = []

    def grow(self, count: int, image_refs: list[str]) -> None:
        r = self.runtime
        while len(self.pods) < count:
            sid, cfg = r.run_pod()
            self.pods.append(sid)
            self.containers.append(r.create_start(sid, cfg, ["sleep", "3600"]))
        for ref in image_refs[len(self.images):count]:
            r.daemon.images.PullImage(api.PullImageRequest(image=api.ImageSpec(image=ref)), timeout=120)
            self.images.append(ref)

    def remove(self) -> None:
        for cid in self.containers:
            self.runtime.remove_container(cid)
        for sid in self.pods:
            self.runtime.remove_pod(sid)
        for ref in self.images:
            self.runtime.daemon.images.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image=ref)),
                                                   timeout=60)


def polled_calls(o: Objects) -> dict[str, Callable[[], Any]]:
    rt, im = o.runtime.rt, o.runtime.daemon.images
    pick = random.Random(7)
    return {
        "Version": lambda: rt.Version(api.VersionRequest(), timeout=10),
        "PodSandboxStatus": lambda: rt.PodSandboxStatus(
            api.PodSandboxStatusRequest(pod_sandbox_id=pick.choice(o.pods)), timeout=10),
        "ContainerStatus": lambda: rt.ContainerStatus(
            api.ContainerStatusRequest(container_id=pick.choice(o.containers)), timeout=10),
        "ListPodSandbox": lambda: rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10),
        "ListContainers": lambda: rt.ListContainers(api.ListContainersRequest(), timeout=10),
        "ImageStatus": lambda: im.ImageStatus(
            api.ImageStatusRequest(image=api.ImageSpec(image=pick.choice(o.images))), timeout=10),
        "ListImages": lambda: im.ListImages(api.ListImagesRequest(), timeout=10),
        "ListContainerStats": lambda: rt.ListContainerStats(api.ListContainerStatsRequest(), timeout=30),
        "ListPodSandboxStats": lambda: rt.ListPodSandboxStats(api.ListPodSandboxStatsRequest(), timeout=30),
    }


def _answered(call: Callable[[], object]) -> bool:
    """Make one call; False when it ran past its deadline (containerd's ListPodSandboxStats does at 500
    pods), which the series records instead of ending the run."""
    try:
        call()
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
        return False
    return True


def series(objects: list[Objects], calls: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    tables = {o.runtime.name: polled_calls(o) for o in objects}
    for name in tables[objects[0].runtime.name]:
        lat: dict[str, list[float]] = {o.runtime.name: [] for o in objects}
        cpu: dict[str, float] = {o.runtime.name: 0.0 for o in objects}
        timeouts: dict[str, int] = {o.runtime.name: 0 for o in objects}
        for o in objects:
            for _ in range(20):
                if not _answered(tables[o.runtime.name][name]):
                    break  # a runtime that cannot answer within the deadline is not warmed 20 times over
        # The stats calls read every cgroup (hundreds of ms at scale): a tenth as many samples.
        count = max(20, calls // 10) if "Stats" in name else calls
        before = {o.runtime.name: cpu_seconds(o.runtime.daemon.proc.pid) for o in objects}
        for i in range(count):
            for o in objects if i % 2 == 0 else list(reversed(objects)):
                rn = o.runtime.name
                started = time.perf_counter()
                if not _answered(tables[rn][name]):
                    timeouts[rn] += 1  # counted at the deadline: the figure is then a lower bound
                lat[rn].append(time.perf_counter() - started)
        for o in objects:
            cpu[o.runtime.name] = (cpu_seconds(o.runtime.daemon.proc.pid) - before[o.runtime.name]) / count
        row: dict[str, Any] = {}
        for rn, xs in lat.items():
            xs.sort()
            row[rn] = {"p50_ms": harness.median(xs) * 1000, "p99_ms": xs[int(len(xs) * 0.99) - 1] * 1000,
                       "cpu_ms_per_call": cpu[rn] * 1000, "deadline_exceeded": timeouts[rn]}
        row["ratio_p50"] = row["crib"]["p50_ms"] / row["containerd"]["p50_ms"]
        row["ratio_cpu"] = row["crib"]["cpu_ms_per_call"] / max(row["containerd"]["cpu_ms_per_call"], 1e-9)
        out[name] = row
        c, d = row["crib"], row["containerd"]
        print(f"  {name:<20} crib {c['p50_ms']:7.3f} / {c['p99_ms']:7.3f} ms, cpu {c['cpu_ms_per_call']:6.3f}"
              f" ms | containerd {d['p50_ms']:7.3f} / {d['p99_ms']:7.3f} ms, cpu {d['cpu_ms_per_call']:6.3f}"
              f" ms | ratio p50 {row['ratio_p50']:.2f}, cpu {row['ratio_cpu']:.2f}", flush=True)
        for rn, n in timeouts.items():
            if n:
                print(f"    {rn}: {n} of {count} calls ran past their deadline (a lower bound above)",
                      flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench calls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,100,500", help="comma-separated object counts, ascending")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--crib-src", type=Path, help="run crib from this src/ (before/after figures)")
    args = parser.parse_args(argv)
    harness.use_crib_src(args.crib_src)
    scales = sorted(int(s) for s in args.scales.split(","))
    base_layer = img.busybox_layer().build()
    extra = {f"crib-bench/many-{i}:latest": build_image(
        [base_layer, Layer(comment=f"image {i}").file(f"bench-{i}", f"{i}\n").build()],
        platform=img.host_platform()) for i in range(max(scales))}
    results: dict[str, Any] = {}
    prefix = 24 if max(scales) < 200 else 21
    with tempfile.TemporaryDirectory(prefix="crib-bench-calls-") as tmp, \
            pair(Path(tmp), images=extra, subnet_prefix=prefix) as (runtimes, catalogue):
        refs = [catalogue.reference(name) for name in extra]
        objects = [Objects(r) for r in runtimes]
        try:
            for scale in scales:
                started = time.monotonic()
                for o in objects:
                    o.grow(scale, refs)
                print(f"\n{scale} pods (one running container each) and {scale} extra images per runtime "
                      f"(set up in {time.monotonic() - started:.0f}s); p50 / p99 latency, daemon CPU per "
                      "call", flush=True)
                results[str(scale)] = series(objects, args.calls)
        finally:
            for o in objects:
                o.remove()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
