"""`python -m bench soak [--minutes N]`: a chaos soak of crib, unattended and bounded.

For N minutes (default 10) a kubelet-like client (client.py) keeps ~30 pods of two containers churning
(run, exec, logs, stop, remove, restarts) while an injector (faults.py) breaks things at random: conmon
and container processes killed, a CNI plugin killed mid-ADD, runc killed mid-create, the daemon killed
and restarted, a registry stalled mid-pull, crib's root filesystem filled and freed. The invariants of
checks.py run all along and at the end. The report gives the faults injected by kind, the RPCs made, the
errors by status code, and the violations (the goal is none); the exit status is 1 when there are any.

Not part of `make test`'s default run (tests/integration/test_soak.py runs a one-minute version). Needs
root, like the daemon; runs on its own temporary root, registry, bridge and subnet.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench.soak import checks
from bench.soak.client import Kubelet, Rpc, Stats, puller
from bench.soak.env import soak_env
from bench.soak.faults import Injector, RestartHooks
from tests.integration.net_helpers import free_port


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    minutes: float = 10.0
    pods: int = 30
    workers: int = 4
    seed: int = 0
    fault_interval: tuple[float, float] = (3.0, 10.0)
    churn_after: float = 45.0  # a pod older than this may be replaced by a new one
    check_every: float = 15.0
    drain_seconds: float = 240.0


def run(settings: Settings) -> dict[str, Any]:
    """One soak; returns the report (see the module note)."""
    seed = settings.seed or random.SystemRandom().randrange(1, 2**31)
    rng = random.Random(seed)
    stats = Stats()
    load_before = os.getloadavg()
    started = time.monotonic()
    with soak_env(daemon_config={"runtime": {"pod_stop_grace": "2s"}}) as env:
        rpc = Rpc(env.daemon.endpoint, stats)
        if rpc.call("PullImage", _pull(env.busybox)) is None:
            raise RuntimeError(f"cannot pull {env.busybox} to start the soak:\n{env.daemon.log_tail()}")
        ports = [free_port() for _ in range(settings.pods // 3)]
        kubelet = Kubelet(rpc, tag=env.tag, image=env.busybox, log_dir=env.log_dir, slots=settings.pods,
                          host_ports=ports, churn_after=settings.churn_after, rng=rng)

        def after_restart(seen: object) -> None:
            assert isinstance(seen, set)
            checks.check_pods_survived(seen - kubelet.removals, checks.listed_pods(rpc, patience=15), stats)

        hooks = RestartHooks(before_kill=lambda: checks.listed_pods(rpc) or set(),
                             while_down=lambda: checks.check_database(env, stats),
                             after_restart=after_restart)
        injector = Injector(env, stats, rng, settings.fault_interval, hooks)
        stop_faults, stop_client = threading.Event(), threading.Event()
        threads = [threading.Thread(target=kubelet.run, args=(stop_client, lambda: rng.uniform(0.2, 1.0)),
                                    name=f"kubelet-{i}", daemon=True) for i in range(settings.workers)]
        threads.append(threading.Thread(target=puller, args=(rpc, env.pullme, stop_client, 4.0),
                                        name="puller", daemon=True))
        fault_thread = threading.Thread(target=injector.run, args=(stop_faults,), name="injector",
                                        daemon=True)
        for thread in [*threads, fault_thread]:
            thread.start()
        end = started + settings.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(settings.check_every, max(0.0, end - time.monotonic())))
            checks.check_agreement(env, rpc, stats, injector.restarting)
            if env.daemon.proc is not None and env.daemon.proc.poll() is not None and \
                    not injector.restarting.is_set():
                stats.violation(f"the daemon died by itself (exit {env.daemon.proc.returncode}):\n"
                                + env.daemon.log_tail(40))
                env.daemon.start()
        stop_faults.set()
        fault_thread.join(timeout=120)
        stop_client.set()
        for thread in threads:
            thread.join(timeout=180)
        checks.check_agreement(env, rpc, stats, injector.restarting)
        checks.remove_everything(rpc, stats, time.monotonic() + settings.drain_seconds)
        rpc.close()
        code = env.daemon.stop()
        if code != 0:
            stats.violation(f"the daemon did not stop cleanly on SIGTERM (exit {code})")
        checks.check_database(env, stats, empty=True)
        checks.final_sweep(env, stats)
        kept = ""
        if stats.violations:  # the daemon's log goes with the temporary root: keep it for the reader
            kept = f"{tempfile.gettempdir()}/crib-soak-{seed}-daemon.log"
            shutil.copyfile(env.daemon.log_path, kept)
    report = _report(settings, seed, stats, started, load_before)
    report["daemon_log"] = kept
    return report


def _pull(image: str) -> Any:
    from crib._proto.runtime.v1 import api_pb2 as api

    return api.PullImageRequest(image=api.ImageSpec(image=image))


def _report(settings: Settings, seed: int, stats: Stats, started: float,
            load_before: tuple[float, float, float]) -> dict[str, Any]:
    with stats.lock:
        return {
            "minutes": settings.minutes, "pods": settings.pods, "seed": seed,
            "wall_seconds": round(time.monotonic() - started, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "faults": dict(sorted(stats.faults.items())),
            "rpcs": sum(stats.rpcs.values()), "rpcs_by_method": dict(stats.rpcs.most_common()),
            "codes": dict(stats.codes.most_common()),
            "errors": {f"{m} {c}": n for (m, c), n in stats.errors.most_common()},
            "error_samples": {f"{m} {c}": text for (m, c), text in sorted(stats.samples.items())},
            "actions": dict(sorted(stats.actions.items())),
            "violations": list(stats.violations),
            "fault_log": [(kind, round(start - started, 1), round(end - started, 1))
                          for kind, start, end in stats.windows],
        }


def print_report(report: dict[str, Any]) -> None:
    print(f"crib chaos soak: {report['minutes']:g} min, {report['pods']} pods, seed {report['seed']}, "
          f"{report['wall_seconds']:g} s wall; load average {report['load_average_before']} -> "
          f"{report['load_average_after']}")
    print(f"\nfaults injected ({sum(v for k, v in report['faults'].items() if 'no target' not in k)}):")
    for kind, n in report["faults"].items():
        print(f"  {kind:<32} {n}")
    print(f"\nRPCs made: {report['rpcs']}")
    for method, n in report["rpcs_by_method"].items():
        print(f"  {method:<32} {n}")
    print("\nanswers by status code:")
    for code, n in report["codes"].items():
        print(f"  {code:<32} {n}")
    print("\nerrors by RPC and code (one message each):")
    for key, n in report["errors"].items():
        print(f"  {key:<44} {n:>5}  {report['error_samples'].get(key, '')[:110]}")
    print("\nclient actions:")
    for action, n in report["actions"].items():
        print(f"  {action:<32} {n}")
    print(f"\nviolations: {len(report['violations'])}"
          + (f" (the daemon's log is kept in {report['daemon_log']})" if report.get("daemon_log") else ""))
    for violation in report["violations"][:50]:
        print(f"  {violation}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long faults are injected (10)")
    parser.add_argument("--pods", type=int, default=30, help="pods kept churning, two containers each (30)")
    parser.add_argument("--workers", type=int, default=4, help="client threads syncing pods (4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0: a new one, printed)")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    report = run(Settings(minutes=args.minutes, pods=args.pods, workers=args.workers, seed=args.seed))
    print_report(report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 1 if report["violations"] else 0


__all__ = ["Settings", "main", "print_report", "run"]
