"""Pod network set-up and teardown, crib vs containerd: RunPodSandbox + StopPodSandbox + RemovePodSandbox.

    .venv/bin/python -m bench network [--cycles 50] [--warmup 3] [--json FILE]

Both runtimes run side by side for the whole benchmark and read the *same* conflist from one private conf dir
(bridge + host-local + portmap + loopback from tests/fixtures/cni.py: a bridge named with the run's tag, a
free 10.x.y.0/24, ipMasq and hairpin on), with the same plugins (/usr/lib/cni). Each cycle is one pod,
kubelet-like (a PID namespace per container, a cgroupfs parent of its own), run, stopped and removed; the
three calls are timed separately through the same generated gRPC stubs, crib and containerd alternating
cycle by cycle (A B, B A, ...). Two series: pods without port mappings, and pods with one TCP hostPort (the
portmap plugin then adds and removes DNAT chains). containerd's sandbox ("pause") image is busybox-static
`sleep` from the image fixtures on a private docker-registry on 127.0.0.1, pulled before timing starts.

Needs root. Everything it creates (daemons, registry, bridge, iptables rules, leases, cgroups) is removed at
the end and the network leak check (tests/fixtures/cni.py) runs after each series; containerd 1.6 keeps its
libcni result cache in /var/lib/cni/results (not configurable), which it empties on each DEL; the directory
is removed again if this run created it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/network.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed
from tests.fixtures.containerd import Containerd
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.oci import ImageConfig, build_image
from tests.fixtures.registry import LocalRegistry

PAUSE = "crib-bench/pause:latest"
TAG = f"cribbench{uuid.uuid4().hex[:6]}"
CALLS = ("RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "cycle")
HOST_PORT = 28080


def pod_config(host_port: int | None) -> api.PodSandboxConfig:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="bench", uid=uuid.uuid4().hex), hostname=name)
    config.linux.cgroup_parent = f"/{TAG}/{name}"
    config.linux.security_context.namespace_options.pid = api.CONTAINER
    if host_port:
        config.port_mappings.append(api.PortMapping(protocol=api.TCP, container_port=80, host_port=host_port))
    return config


def one_cycle(runtime: Any, host_port: int | None) -> tuple[float, float, float]:
    """Seconds of RunPodSandbox, StopPodSandbox and RemovePodSandbox of one new pod."""
    config = pod_config(host_port)
    t0 = time.perf_counter()
    sid = runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
    t1 = time.perf_counter()
    runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    t2 = time.perf_counter()
    runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def series(runtimes: dict[str, Any], cycles: int, warmup: int,
           host_port: int | None) -> dict[str, dict[str, list[float]]]:
    """`cycles` timed cycles per runtime, alternating, after `warmup` untimed ones each."""
    for _ in range(warmup):
        for rt in runtimes.values():
            one_cycle(rt, host_port)
    times: dict[str, dict[str, list[float]]] = {n: {c: [] for c in CALLS} for n in runtimes}
    names = list(runtimes)
    for i in range(cycles):
        for name in names if i % 2 == 0 else list(reversed(names)):
            run, stop, remove = one_cycle(runtimes[name], host_port)
            for call, seconds in zip(CALLS, (run, stop, remove, run + stop + remove), strict=True):
                times[name][call].append(seconds)
    return times


def report(title: str, times: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Print p50/p95 per call and runtime and the ratios crib/containerd; return them (milliseconds)."""
    print(f"\n{title}  (ms; ratio = crib / containerd, below 1: crib faster)")
    print(f"  {'call':<18}{'crib p50':>10}{'p95':>8}{'ctrd p50':>10}{'p95':>8}{'ratio p50':>11}{'p95':>7}")
    out: dict[str, Any] = {}
    for call in CALLS:
        c, d = times["crib"][call], times["containerd"][call]
        row = {"crib_p50_ms": harness.median(c) * 1e3, "crib_p95_ms": harness.p95(c) * 1e3,
               "containerd_p50_ms": harness.median(d) * 1e3, "containerd_p95_ms": harness.p95(d) * 1e3}
        row["ratio_p50"] = row["crib_p50_ms"] / row["containerd_p50_ms"]
        row["ratio_p95"] = row["crib_p95_ms"] / row["containerd_p95_ms"]
        out[call] = row
        print(f"  {call:<18}{row['crib_p50_ms']:>10.1f}{row['crib_p95_ms']:>8.1f}"
              f"{row['containerd_p50_ms']:>10.1f}{row['containerd_p95_ms']:>8.1f}"
              f"{row['ratio_p50']:>11.2f}{row['ratio_p95']:>7.2f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench network", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    var_lib_cni_existed = Path("/var/lib/cni").exists()
    results: dict[str, Any] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="crib-bench-net-") as tmp:
        base = Path(tmp)
        bed = Testbed(base / "cni", TAG)
        bed.write_conflist()
        pause_image = build_image([img.busybox_layer().build()], platform=img.host_platform(),
                                  spec=ImageConfig(entrypoint=("sleep",), cmd=("infinity",)))
        try:
            with LocalRegistry(base / "registry") as registry:
                pause = img.seed(registry, {PAUSE: pause_image}).reference(PAUSE)
                crib = CribDaemon(base / "crib", {"network": bed.network_config()},
                                  extra_args=["--log-level", "warning"])
                ctrd = Containerd(base / "containerd", cni_conf_dir=str(bed.conf_dir),
                                  cni_bin_dir="/usr/lib/cni", mirrors={registry.host: registry.url},
                                  sandbox_image=pause)
                try:
                    crib.start()
                    ctrd.start()
                    ctrd.images.PullImage(api.PullImageRequest(image=api.ImageSpec(image=pause)), timeout=120)
                    runtimes = {"crib": crib.runtime, "containerd": ctrd.runtime}
                    print(f"runtimes up on network {bed.network} ({bed.subnet}); {args.cycles} cycles per "
                          "series, alternating", flush=True)
                    for key, title, port in (("no_ports", "pods without port mappings", None),
                                             ("host_port", "pods with one TCP hostPort", HOST_PORT)):
                        results[key] = report(title, series(runtimes, args.cycles, args.warmup, port))
                        leaks = bed.leaks()
                        problems += leaks
                        print(f"  network leaks after the series: {leaks or 'none'}", flush=True)
                finally:
                    ctrd.stop()
                    crib.stop()
        finally:
            harness.remove_cgroups(TAG)
            bed.cleanup()
            if not var_lib_cni_existed:
                shutil.rmtree("/var/lib/cni/results", ignore_errors=True)
                with contextlib.suppress(OSError):
                    Path("/var/lib/cni").rmdir()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
