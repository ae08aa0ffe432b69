"""What NRI adds to RunPodSandbox and CreateContainer: crib with NRI off, on without plugins, on with one
no-op plugin subscribed to every event; containerd (its CRI plugin; Debian's 1.6 has no NRI) beside them.

    .venv/bin/python -m bench nri [--cycles 50] [--json FILE]

Four daemons run side by side, each on its own temporary root and its own CNI bridge network of the same
shape (tests.fixtures.cni), with the busybox image from a private registry, as in `bench runtime`:

    crib-off      [nri] enable = false (nothing of crib.nri is imported)
    crib-on       [nri] enable = true, the default, with no plugin connected
    crib-plugin   [nri] enable = true and one pre-installed plugin crib starts from plugin_path: the test
                  plugin (tests/fixtures/nri_plugin.py) as its own process, subscribed to every event,
                  answering each with an empty response
    containerd    the reference

Each operation runs `--cycles` times per daemon, the order of the daemons reversed every cycle, through
the same gRPC stubs: (a) RunPodSandbox (the pod stopped and removed untimed); (b) CreateContainer in one
long-lived pod (the container removed untimed). The added cost of NRI is reported two ways: the
difference of the medians, and the median of the per-cycle differences (cycle i of crib-plugin minus
cycle i of crib-off, run back to back, so slow drift on the machine cancels). Idle RSS of each crib daemon
is printed too.

On a shared machine a pod's 100 ms carry more noise than NRI's cost, so (c) also times the hooks alone:
crib.nri's runtime in this process (asyncio, as in the daemon), the same no-op plugin started by it from
plugin_path as its own process, and `--hook-cycles` rounds of the RunPodSandbox hook and of the
CreateContainer hook (on the real spec of a container of crib-plugin), with no plugin and with it.
What the daemon adds to a call is that hook's time; with NRI off the lifecycles call no hooks at all.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/nri.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.runtime import PAUSE, TAG, Runtime, container_config, measure
from crib._proto.runtime.v1 import api_pb2 as api
from crib.config import NriConfig
from crib.hooks import ContainerStep, PodStep
from crib.nri import NriRuntime
from crib.state.records import ContainerRecord, Phase, PodMeta, SandboxRecord
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed
from tests.fixtures.containerd import Containerd
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.oci import ImageConfig, build_image
from tests.fixtures.registry import LocalRegistry

REPO = Path(__file__).resolve().parents[1]
CRIBS = ("crib-off", "crib-on", "crib-plugin")


def _plugin_dir(base: Path) -> Path:
    """A plugin_path holding the test plugin as pre-installed plugin 50-noop (no config: it does nothing)."""
    directory = base / "nri-plugins"
    directory.mkdir()
    exe = directory / "50-noop"
    exe.write_text(f"#!/bin/sh\ncd {REPO}\nexec {sys.executable} -m tests.fixtures.nri_plugin\n")
    exe.chmod(0o755)
    return directory


def _crib(base: Path, name: str, bed: Testbed, plugins: Path) -> CribDaemon:
    nri: dict[str, Any] = {"enable": name != "crib-off"}
    if name == "crib-plugin":
        nri["plugin_path"] = str(plugins)
    daemon = CribDaemon(
        base / name,
        {
            "log_level": "warning",
            "image": {"registries_conf": str(base / "none")},
            "network": bed.network_config(),
            "nri": nri,
        },
    )
    daemon.extra_args = ["--log-level", "warning"]
    return daemon


def _daemon_rss_mib(pid: int) -> float:
    """The daemon process alone (the launched plugin is its child, and counted apart)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _summary(title: str, times: dict[str, list[float]]) -> dict[str, Any]:
    print(f"\n{title}")
    print(f"  {'runtime':<13}{'p50':>10}{'p95':>10}{'min':>10}{'max':>10}{'vs containerd':>15}")
    out: dict[str, Any] = {}
    base = harness.median(times["containerd"])
    for name, xs in times.items():
        out[name] = {
            "p50_ms": harness.median(xs) * 1000,
            "p95_ms": harness.p95(xs) * 1000,
            "min_ms": min(xs) * 1000,
            "max_ms": max(xs) * 1000,
            "ratio_p50": harness.median(xs) / base,
        }
        print(
            f"  {name:<13}{out[name]['p50_ms']:8.2f}ms{out[name]['p95_ms']:8.2f}ms"
            f"{out[name]['min_ms']:8.2f}ms{out[name]['max_ms']:8.2f}ms{out[name]['ratio_p50']:13.2f}"
        )
    off = times["crib-off"]
    for name in ("crib-on", "crib-plugin"):
        paired = [(a - b) * 1000 for a, b in zip(times[name], off, strict=True)]
        out[f"added_{name}"] = {
            "p50_diff_ms": out[name]["p50_ms"] - out["crib-off"]["p50_ms"],
            "paired_median_ms": harness.median(paired),
        }
        print(
            f"  added by {name:<12} difference of p50 {out[f'added_{name}']['p50_diff_ms']:+6.2f} ms, "
            f"median of paired differences {out[f'added_{name}']['paired_median_ms']:+6.2f} ms"
        )
    return out


def run(runtimes: list[Runtime], cycles: int) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def runp(r: Runtime) -> Callable[[], None]:
        sid, _ = r.run_pod()
        return lambda: r.remove_pod(sid)

    results["a_run_pod_sandbox"] = _summary("(a) RunPodSandbox", measure(runtimes, cycles, "a", runp))
    pods = {r.name: r.run_pod() for r in runtimes}

    def create(r: Runtime) -> Callable[[], None]:
        sid, pod = pods[r.name]
        cfg = container_config(r.image, r.unique("c"), ["sleep", "3600"])
        cid = r.rt.CreateContainer(
            api.CreateContainerRequest(pod_sandbox_id=sid, config=cfg, sandbox_config=pod), timeout=60
        ).container_id
        return lambda: r.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid), timeout=60)

    results["b_create_container"] = _summary("(b) CreateContainer", measure(runtimes, cycles, "b", create))
    for r in runtimes:
        r.remove_pod(pods[r.name][0])
    return results


class _EmptyNode:
    """crib.nri.NodeAccess of a node with nothing on it (the hooks' cost does not depend on it)."""

    def pods(self) -> list[SandboxRecord]:
        return []

    def containers(self) -> list[ContainerRecord]:
        return []

    def spec(self, container_id: str) -> dict[str, Any] | None:
        return None

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        return None

    async def evict(self, container_id: str, reason: str) -> None:
        return None


async def _time_hooks(
    base: Path, plugins: Path | None, spec: dict[str, Any], cycles: int
) -> dict[str, float]:
    """Median microseconds of the RunPodSandbox and CreateContainer hooks (see the module note)."""
    name = "with-plugin" if plugins else "no-plugin"
    runtime = NriRuntime(
        NriConfig(socket_path=str(base / f"{name}.sock"), plugin_path=str(plugins or base / "none"))
    )
    runtime.bind(_EmptyNode())
    await runtime.start()
    run: list[float] = []
    create: list[float] = []
    try:
        for i in range(cycles):
            pod = SandboxRecord(
                id=f"pod{i}",
                name=f"pod{i}",
                meta=PodMeta(name=f"pod{i}", uid="u", namespace="b"),
                phase=Phase.CREATING,
            )
            ctr = ContainerRecord(
                id=f"ctr{i}", name=f"ctr{i}", sandbox_id=pod.id, meta_name="c", phase=Phase.CREATING
            )
            began = time.perf_counter()
            await runtime.pod(PodStep.RUN, pod)
            run.append(time.perf_counter() - began)
            fresh = copy.deepcopy(spec)
            began = time.perf_counter()
            await runtime.adjust(ctr, fresh)
            create.append(time.perf_counter() - began)
            await runtime.container(ContainerStep.REMOVE, ctr)
            await runtime.pod(PodStep.REMOVE, pod)
    finally:
        await runtime.close()
    return {
        "run_pod_sandbox_us": harness.median(run) * 1e6,
        "create_container_us": harness.median(create) * 1e6,
    }


def hook_costs(base: Path, plugins: Path, spec: dict[str, Any], cycles: int) -> dict[str, Any]:
    out = {
        "no_plugin": asyncio.run(_time_hooks(base, None, spec, cycles)),
        "with_plugin": asyncio.run(_time_hooks(base, plugins, spec, cycles)),
    }
    print(f"\n(c) the hooks alone, {cycles} rounds each (median)")
    for key, label in (
        ("run_pod_sandbox_us", "RunPodSandbox hook"),
        ("create_container_us", "CreateContainer hook"),
    ):
        print(
            f"  {label:<22} no plugin {out['no_plugin'][key]:8.1f} us   one no-op plugin "
            f"{out['with_plugin'][key]:8.1f} us"
        )
    return out


def _a_spec(daemon: CribDaemon, image: str, pod: tuple[str, api.PodSandboxConfig]) -> dict[str, Any]:
    """The OCI spec crib gives a container (taken from one it creates), for the CreateContainer hook."""
    r = Runtime("spec", daemon, "", image)
    cfg = container_config(image, "spec-source", ["sleep", "3600"])
    cid = r.rt.CreateContainer(
        api.CreateContainerRequest(pod_sandbox_id=pod[0], config=cfg, sandbox_config=pod[1]), timeout=60
    ).container_id
    try:
        info = r.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"]
        spec: dict[str, Any] = json.loads(info)["runtimeSpec"]
    finally:
        r.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid), timeout=60)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench nri", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--hook-cycles", type=int, default=500)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crib-bench-nri-") as tmp:
        base = Path(tmp)
        names = (*CRIBS, "containerd")
        beds = {name: Testbed(base / f"cni-{name}", TAG) for name in names}
        for bed in beds.values():
            bed.write_conflist()
        plugins = _plugin_dir(base)
        pause_image = build_image(
            [img.busybox_layer().build()],
            platform=img.host_platform(),
            spec=ImageConfig(entrypoint=("sleep",), cmd=("infinity",)),
        )
        with LocalRegistry(base / "registry") as registry:
            catalogue = img.seed(
                registry, {img.BUSYBOX: img.catalogue_artifacts()[img.BUSYBOX], PAUSE: pause_image}
            )
            busybox = catalogue.reference(img.BUSYBOX)
            daemons: dict[str, Any] = {name: _crib(base, name, beds[name], plugins) for name in CRIBS}
            daemons["containerd"] = Containerd(
                base / "containerd",
                cni_conf_dir=str(beds["containerd"].conf_dir),
                mirrors={registry.host: registry.url},
                sandbox_image=catalogue.reference(PAUSE),
            )
            try:
                for daemon in daemons.values():
                    daemon.start()
                    for ref in (busybox, catalogue.reference(PAUSE)):
                        daemon.images.PullImage(
                            api.PullImageRequest(image=api.ImageSpec(image=ref)), timeout=120
                        )
                # Launched plugins join before the daemon serves, and one that fails to join is killed:
                # its process, a child of the daemon, is the sign that it is attached.
                if len(harness.tree(daemons["crib-plugin"].proc.pid)) < 2:
                    raise RuntimeError(
                        "crib-plugin: the no-op plugin is not running:\n" + daemons["crib-plugin"].log_tail()
                    )
                time.sleep(1)
                idle = {name: _daemon_rss_mib(daemons[name].proc.pid) for name in CRIBS}
                print(
                    "idle daemon RSS: " + ", ".join(f"{n} {v:.1f} MiB" for n, v in idle.items()), flush=True
                )
                runtimes = [Runtime(name, daemons[name], "", busybox) for name in names]
                print(f"{args.cycles} cycles per operation, order reversed every cycle", flush=True)
                results = run(runtimes, args.cycles)
                results["idle_rss_mib"] = idle
                pod = runtimes[0].run_pod()
                spec = _a_spec(daemons["crib-off"], busybox, pod)
                runtimes[0].remove_pod(pod[0])
                results["c_hooks"] = hook_costs(base, plugins, spec, args.hook_cycles)
            finally:
                for daemon in daemons.values():
                    daemon.stop()
                harness.remove_cgroups(TAG)
                for bed in beds.values():
                    bed.cleanup()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
