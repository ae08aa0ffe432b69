"""Stats and metrics with 100 running containers, crib vs containerd (CRI plugin; runc under both).

    .venv/bin/python -m bench metrics [--pods 25] [--per-pod 4] [--calls 50] [--max-age 0] [--json FILE]

Both runtimes run side by side on temporary roots, each with its own CNI bridge network of the same shape
(tests/fixtures/cni.py), the busybox image from a private registry on 127.0.0.1 and kubelet-like pods
(bench/runtime.py's configs). Each gets `--pods` pods with `--per-pod` running `sleep` containers. Then,
`--calls` times per runtime and call, alternating crib and containerd call by call, through the same
generated stubs:

    (a) ListContainerStats                 crib and containerd
    (b) ListPodSandboxStats                crib and containerd
    (c) ListPodSandboxMetrics              crib only (containerd 1.6 has no metrics RPCs), against (a) of
                                           containerd: the figure kubelet would otherwise take from it
    (d) GET /metrics                       crib's Prometheus endpoint, container_* families included

crib runs with `[metrics] max_age` = --max-age (default 0: every call reads every cgroup, netns and
writable layer again, the cost without the cache that normally lets kubelet, `crib top` and Prometheus
share one reading per second).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/metrics.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.runtime import PAUSE, TAG, Runtime, measure, summarize
from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed
from tests.fixtures.containerd import Containerd
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.oci import ImageConfig, build_image
from tests.fixtures.registry import LocalRegistry
from tests.integration.net_helpers import free_port


def _populate(r: Runtime, pods: int, per_pod: int) -> list[str]:
    sids = []
    for _ in range(pods):
        sid, cfg = r.run_pod()
        sids.append(sid)
        for _ in range(per_pod):
            r.create_start(sid, cfg, ["sleep", "3600"])
    return sids


def _timed(calls: int, op: Any) -> list[float]:
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        op()
        out.append(time.perf_counter() - started)
    return out


def run(runtimes: list[Runtime], crib_port: int, calls: int, containers: int) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def stats(r: Runtime) -> None:
        got = r.rt.ListContainerStats(api.ListContainerStatsRequest(), timeout=60).stats
        if len(got) != containers:
            raise RuntimeError(f"{r.name}: ListContainerStats gave {len(got)} of {containers} containers")

    results["a_list_container_stats"] = summarize("(a) ListContainerStats",
                                                  measure(runtimes, calls, "a", stats))

    def pod_stats(r: Runtime) -> None:
        r.rt.ListPodSandboxStats(api.ListPodSandboxStatsRequest(), timeout=60)

    results["b_list_pod_sandbox_stats"] = summarize("(b) ListPodSandboxStats",
                                                    measure(runtimes, calls, "b", pod_stats))
    crib = runtimes[0]

    def pod_metrics() -> None:
        got = crib.rt.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest(), timeout=60).pod_metrics
        if sum(len(p.container_metrics) for p in got) != containers:
            raise RuntimeError("ListPodSandboxMetrics did not cover every container")

    metric_times = _timed(calls, pod_metrics)
    samples = sum(len(p.metrics) + sum(len(c.metrics) for c in p.container_metrics) for p in
                  crib.rt.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest(), timeout=60).pod_metrics)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    body = b""

    def scrape() -> None:
        nonlocal body
        with opener.open(f"http://127.0.0.1:{crib_port}/metrics", timeout=60) as resp:
            body = resp.read()

    scrape_times = _timed(calls, scrape)
    lines = body.count(b"\n")
    baseline = results["a_list_container_stats"]["containerd"]["p50_ms"]
    for key, title, xs, extra in (
            ("c_list_pod_sandbox_metrics", "(c) ListPodSandboxMetrics (crib)", metric_times,
             f"{samples} metrics"),
            ("d_prometheus_scrape", "(d) GET /metrics (crib)", scrape_times,
             f"{len(body) / 1024:.0f} KiB, {lines} lines")):
        p50, p95 = harness.median(xs) * 1000, harness.p95(xs) * 1000
        results[key] = {"p50_ms": p50, "p95_ms": p95, "min_ms": min(xs) * 1000, "max_ms": max(xs) * 1000,
                        "ratio_p50_vs_containerd_list_container_stats": p50 / baseline, "what": extra}
        print(f"\n{title}: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({extra}); "
              f"p50 / containerd's ListContainerStats p50: {p50 / baseline:.2f}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=25)
    parser.add_argument("--per-pod", type=int, default=4)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--max-age", default="0", help="crib's [metrics] max_age (a duration, \"0\" = none)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    containers = args.pods * args.per_pod
    with tempfile.TemporaryDirectory(prefix="crib-bench-metrics-") as tmp:
        base = Path(tmp)
        beds = {name: Testbed(base / f"cni-{name}", TAG) for name in ("crib", "containerd")}
        for bed in beds.values():
            bed.write_conflist()
        pause_image = build_image([img.busybox_layer().build()], platform=img.host_platform(),
                                  spec=ImageConfig(entrypoint=("sleep",), cmd=("infinity",)))
        port = free_port()
        with LocalRegistry(base / "registry") as registry:
            catalogue = img.seed(registry, {img.BUSYBOX: img.catalogue_artifacts()[img.BUSYBOX],
                                            PAUSE: pause_image})
            busybox = catalogue.reference(img.BUSYBOX)
            crib = CribDaemon(base / "crib", {
                "log_level": "warning", "image": {"registries_conf": str(base / "none.conf")},
                "network": beds["crib"].network_config(),
                "metrics": {"address": f"127.0.0.1:{port}", "max_age": args.max_age}})
            crib.extra_args = ["--log-level", "warning"]
            ctrd = Containerd(base / "containerd", cni_conf_dir=str(beds["containerd"].conf_dir),
                              mirrors={registry.host: registry.url}, sandbox_image=catalogue.reference(PAUSE))
            runtimes: list[Runtime] = []
            pods: dict[str, list[str]] = {}
            try:
                crib.start()
                ctrd.start()
                for daemon in (crib, ctrd):
                    for ref in (busybox, catalogue.reference(PAUSE)):
                        request = api.PullImageRequest(image=api.ImageSpec(image=ref))
                        daemon.images.PullImage(request, timeout=120)
                runtimes = [Runtime("crib", crib, "conmon", busybox),
                            Runtime("containerd", ctrd, "containerd-shim-runc-v2", busybox)]
                for r in runtimes:
                    pods[r.name] = _populate(r, args.pods, args.per_pod)
                print(f"{containers} running containers in {args.pods} pods on each runtime; {args.calls} "
                      f"calls per operation, alternating; crib max_age {args.max_age}", flush=True)
                results = run(runtimes, port, args.calls, containers)
            finally:
                for r in runtimes:
                    for sid in pods.get(r.name, []):
                        r.remove_pod(sid)
                ctrd.stop()
                crib.stop()
                harness.remove_cgroups(TAG)
                for bed in beds.values():
                    bed.cleanup()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
