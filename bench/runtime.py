"""Pod and container lifecycle benchmark, crib vs containerd (CRI plugin; runc under both).

    .venv/bin/python -m bench runtime [--cycles 50] [--pods 20] [--json FILE] [--crib-src DIR]

Both runtimes run side by side for the whole benchmark, each on its own temporary root and its own CNI
bridge network of the same shape (bridge + host-local + portmap + loopback, from tests.fixtures.cni, so
RunPodSandbox does the same CNI work on both), the same busybox image from
a private docker-registry on 127.0.0.1, and containerd's sandbox image built the same way (busybox-static
`sleep` as the pause process). Every call goes through the same generated gRPC stubs. Each measured
operation runs `--cycles` times per runtime, alternating crib and containerd call by call:

    (a) RunPodSandbox                                  (the pod is stopped and removed untimed)
    (b) CreateContainer + StartContainer               (in one long-lived pod; removed untimed)
    (c) RunPodSandbox -> CreateContainer -> StartContainer -> StopContainer -> RemoveContainer ->
        StopPodSandbox -> RemovePodSandbox              (the whole cycle)
    (d) ExecSync `true`                                 (in one running container)

Pods are configured as kubelet does (a PID namespace per container, a cgroupfs parent per pod); stops use
timeout 0 (SIGKILL), as `sleep` as PID 1 ignores SIGTERM anyway.

Memory: with `--pods` pods running one `sleep` container each, the resident set of crib's daemon plus all
its conmon processes, against containerd plus all its containerd-shim-runc-v2 processes; per pod =
(with the pods - idle) / pods. RSS as the brief asks, and PSS (shared pages split fairly) beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/runtime.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed, free_subnet
from tests.fixtures.containerd import Containerd
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.oci import ImageConfig, build_image
from tests.fixtures.registry import LocalRegistry

PAUSE = "crib-bench/pause:latest"
TAG = f"cribbench{uuid.uuid4().hex[:6]}"


# -------------------------------------------------------------------------------------------- configs


def pod_config(name: str) -> api.PodSandboxConfig:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="bench", uid=uuid.uuid4().hex, attempt=0),
        hostname=name, log_directory="")
    config.linux.cgroup_parent = f"/{TAG}/{name}"
    config.linux.security_context.namespace_options.pid = api.CONTAINER
    return config


def container_config(image: str, name: str, command: list[str]) -> api.ContainerConfig:
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name=name), image=api.ImageSpec(image=image),
                                 command=command)
    config.linux.security_context.namespace_options.pid = api.CONTAINER
    return config


class Runtime:
    """One contender: its stubs and the process tree that counts for memory."""

    def __init__(self, name: str, daemon: Any, helper: str, image: str) -> None:
        self.name, self.daemon, self.helper, self.image = name, daemon, helper, image
        self.rt = daemon.runtime
        self.counter = 0

    def unique(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def run_pod(self) -> tuple[str, api.PodSandboxConfig]:
        config = pod_config(self.unique(f"pod-{self.name}"))  # cgroup parents of their own
        sid = self.rt.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
        return sid, config

    def remove_pod(self, sid: str) -> None:
        self.rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
        self.rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)

    def create_start(self, sid: str, pod: api.PodSandboxConfig, command: list[str]) -> str:
        cfg = container_config(self.image, self.unique("c"), command)
        cid = self.rt.CreateContainer(api.CreateContainerRequest(pod_sandbox_id=sid, config=cfg,
                                                                 sandbox_config=pod), timeout=60).container_id
        self.rt.StartContainer(api.StartContainerRequest(container_id=cid), timeout=60)
        return cid

    def remove_container(self, cid: str) -> None:
        self.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
        self.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid), timeout=60)

    # ------------------------------------------------------------------------------------------ memory

    def helpers(self) -> list[int]:
        """Monitor processes of this runtime (reparented to PID 1, so not in the daemon's tree)."""
        needle = str(self.daemon.runroot) if self.name == "crib" else str(self.daemon.socket)
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and Path(args[0].decode(errors="replace")).name == self.helper and \
                    needle.encode() in b" ".join(args):
                out.append(int(entry.name))
        return out

    def memory(self) -> dict[str, float]:
        daemon = self.daemon.proc.pid
        helpers = self.helpers()
        return {"daemon_rss_mib": harness.rss_kb(daemon) / 1024,
                "helpers": len(helpers),
                "helpers_rss_mib": sum(harness.rss_kb(p) for p in helpers) / 1024,
                "daemon_pss_mib": _pss_kb([daemon]) / 1024,
                "helpers_pss_mib": _pss_kb(helpers) / 1024}


def _pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for p in harness.tree(pid):
            try:
                for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                continue
    return total


# ----------------------------------------------------------------------------------------- measuring


def measure(runtimes: list[Runtime], cycles: int, name: str,
            op: Callable[[Runtime], Callable[[], None] | None]) -> dict[str, list[float]]:
    """Time op(runtime) `cycles` times per runtime, alternating; op may return an untimed clean-up."""
    times: dict[str, list[float]] = {r.name: [] for r in runtimes}
    for i in range(cycles):
        for r in runtimes if i % 2 == 0 else list(reversed(runtimes)):
            started = time.perf_counter()
            cleanup = op(r)
            times[r.name].append(time.perf_counter() - started)
            if cleanup is not None:
                cleanup()
    print(f"  {name}: done", flush=True)
    return times


def summarize(title: str, times: dict[str, list[float]]) -> dict[str, Any]:
    print(f"\n{title}")
    print(f"  {'runtime':<12}{'p50':>10}{'p95':>10}{'min':>10}{'max':>10}")
    out: dict[str, Any] = {}
    for name, xs in times.items():
        out[name] = {"p50_ms": harness.median(xs) * 1000, "p95_ms": harness.p95(xs) * 1000,
                     "min_ms": min(xs) * 1000, "max_ms": max(xs) * 1000}
        print(f"  {name:<12}{out[name]['p50_ms']:8.1f}ms{out[name]['p95_ms']:8.1f}ms"
              f"{out[name]['min_ms']:8.1f}ms{out[name]['max_ms']:8.1f}ms")
    out["ratio_p50"] = out["crib"]["p50_ms"] / out["containerd"]["p50_ms"]
    out["ratio_p95"] = out["crib"]["p95_ms"] / out["containerd"]["p95_ms"]
    print(f"  ratio crib/containerd: p50 {out['ratio_p50']:.2f}, p95 {out['ratio_p95']:.2f}")
    return out


def run_benchmarks(runtimes: list[Runtime], cycles: int) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def runp(r: Runtime) -> Callable[[], None]:
        sid, _ = r.run_pod()
        return lambda: r.remove_pod(sid)

    results["a_run_pod_sandbox"] = summarize("(a) RunPodSandbox", measure(runtimes, cycles, "a", runp))

    pods = {r.name: r.run_pod() for r in runtimes}

    def create_start(r: Runtime) -> Callable[[], None]:
        sid, cfg = pods[r.name]
        cid = r.create_start(sid, cfg, ["sleep", "3600"])
        return lambda: r.remove_container(cid)

    results["b_create_start"] = summarize("(b) CreateContainer + StartContainer",
                                          measure(runtimes, cycles, "b", create_start))

    def cycle(r: Runtime) -> None:
        sid, cfg = r.run_pod()
        cid = r.create_start(sid, cfg, ["sleep", "3600"])
        r.remove_container(cid)
        r.remove_pod(sid)

    results["c_whole_cycle"] = summarize("(c) runp -> create -> start -> stop -> rm -> stopp -> rmp",
                                         measure(runtimes, cycles, "c", cycle))

    running = {r.name: r.create_start(*pods[r.name], ["sleep", "3600"]) for r in runtimes}

    def exec_true(r: Runtime) -> None:
        resp = r.rt.ExecSync(api.ExecSyncRequest(container_id=running[r.name], cmd=["true"], timeout=30),
                             timeout=60)
        if resp.exit_code != 0:
            raise RuntimeError(f"{r.name}: exec true exited {resp.exit_code}")

    results["d_exec_sync_true"] = summarize("(d) ExecSync true", measure(runtimes, cycles, "d", exec_true))
    for r in runtimes:
        r.remove_pod(pods[r.name][0])
    return results


def memory(runtimes: list[Runtime], count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print(f"\nmemory: idle, then {count} pods with one sleep container each")
    for r in runtimes:
        time.sleep(2)
        idle = r.memory()
        pods = []
        for _ in range(count):
            sid, cfg = r.run_pod()
            r.create_start(sid, cfg, ["sleep", "3600"])
            pods.append(sid)
        time.sleep(3)
        loaded = r.memory()
        for sid in pods:
            r.remove_pod(sid)
        total_idle = idle["daemon_rss_mib"] + idle["helpers_rss_mib"]
        total = loaded["daemon_rss_mib"] + loaded["helpers_rss_mib"]
        pss_idle = idle["daemon_pss_mib"] + idle["helpers_pss_mib"]
        pss = loaded["daemon_pss_mib"] + loaded["helpers_pss_mib"]
        out[r.name] = {"idle": idle, "loaded": loaded, "total_rss_mib": total,
                       "per_pod_rss_mib": (total - total_idle) / count, "total_pss_mib": pss,
                       "per_pod_pss_mib": (pss - pss_idle) / count}
        print(f"  {r.name:<11} idle {total_idle:6.1f} MiB | {count} pods: daemon "
              f"{loaded['daemon_rss_mib']:6.1f} "
              f"+ {loaded['helpers']} {r.helper} {loaded['helpers_rss_mib']:6.1f} = {total:6.1f} MiB RSS "
              f"({pss:6.1f} MiB PSS) | per pod {out[r.name]['per_pod_rss_mib']:5.2f} MiB RSS, "
              f"{out[r.name]['per_pod_pss_mib']:5.2f} MiB PSS")
    out["ratio_per_pod_rss"] = out["crib"]["per_pod_rss_mib"] / out["containerd"]["per_pod_rss_mib"]
    out["ratio_per_pod_pss"] = out["crib"]["per_pod_pss_mib"] / out["containerd"]["per_pod_pss_mib"]
    print(f"  ratio crib/containerd per pod: RSS {out['ratio_per_pod_rss']:.2f}, "
          f"PSS {out['ratio_per_pod_pss']:.2f}")
    return out


@contextlib.contextmanager
def pair(base: Path, *, images: Mapping[str, Any] | None = None, subnet_prefix: int = 24,
         crib_config: Mapping[str, Any] | None = None) -> Iterator[tuple[list[Runtime], img.Catalogue]]:
    """crib and containerd side by side (see the module note), each with busybox and the pause image pulled,
    plus `images` (name -> artifact) pushed to the private registry (pulled by the caller if it wants).
    Both are stopped and their networks and cgroups removed on exit."""
    beds = {name: Testbed(base / f"cni-{name}", TAG) for name in ("crib", "containerd")}
    for bed in beds.values():
        if subnet_prefix != 24:
            bed.subnet = free_subnet().supernet(new_prefix=subnet_prefix)
        bed.write_conflist()
    pause_image = build_image([img.busybox_layer().build()], platform=img.host_platform(),
                              spec=ImageConfig(entrypoint=("sleep",), cmd=("infinity",)))
    with LocalRegistry(base / "registry") as registry:
        catalogue = img.seed(registry, {img.BUSYBOX: img.catalogue_artifacts()[img.BUSYBOX],
                                        PAUSE: pause_image, **(images or {})})
        busybox = catalogue.reference(img.BUSYBOX)
        crib = CribDaemon(base / "crib", {"image": {"registries_conf": str(base / "none.conf")},
                                          "network": beds["crib"].network_config(), **(crib_config or {})})
        crib.extra_args = ["--log-level", "warning"]
        ctrd = Containerd(base / "containerd", cni_conf_dir=str(beds["containerd"].conf_dir),
                          mirrors={registry.host: registry.url}, sandbox_image=catalogue.reference(PAUSE))
        try:
            crib.start()
            ctrd.start()
            for daemon in (crib, ctrd):
                for ref in (busybox, catalogue.reference(PAUSE)):
                    daemon.images.PullImage(api.PullImageRequest(image=api.ImageSpec(image=ref)), timeout=120)
            yield ([Runtime("crib", crib, "conmon", busybox),
                    Runtime("containerd", ctrd, "containerd-shim-runc-v2", busybox)], catalogue)
        finally:
            ctrd.stop()
            crib.stop()
            harness.remove_cgroups(TAG)
            for bed in beds.values():
                bed.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench runtime", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--crib-src", type=Path, help="run crib from this src/ directory (PYTHONPATH)")
    args = parser.parse_args(argv)
    harness.use_crib_src(args.crib_src)
    with tempfile.TemporaryDirectory(prefix="crib-bench-rt-") as tmp, pair(Path(tmp)) as (runtimes, _):
        print(f"runtimes up; {args.cycles} cycles per operation, alternating", flush=True)
        results = run_benchmarks(runtimes, args.cycles)
        results["memory"] = memory(runtimes, args.pods)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
