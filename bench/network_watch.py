"""How much the CNI conf-dir watcher costs, and how fast a fixed config turns NetworkReady true.

    .venv/bin/python -m bench network-watch [--polls 5000] [--changes 20]

Prints the cost of one poll (stat of the conf dir and both plugin dirs), the CPU share at the 1 s interval
crib uses, and the latency from writing a valid conflist to NetworkReady=true in an in-process manager (with
the real plugins answering VERSION). No root needed; nothing outside a temporary directory is touched.
This is the measurement behind "poll, do not inotify" in src/crib/network/watch.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from crib.config import NetworkConfig
from crib.network import CNIManager
from crib.network.watch import fingerprint

PLUGIN_DIRS = ["/opt/cni/bin", "/usr/lib/cni"]


def poll_cost(conf_dir: Path, polls: int) -> float:
    dirs = [str(conf_dir), *PLUGIN_DIRS]
    start = time.perf_counter()
    for _ in range(polls):
        fingerprint(dirs)
    return (time.perf_counter() - start) / polls


async def until(predicate: Callable[[], bool]) -> None:
    for _ in itertools.count():
        if predicate():
            return
        await asyncio.sleep(0.001)


async def reaction(conf_dir: Path, root: Path, changes: int, interval: float) -> list[float]:
    cfg = NetworkConfig(conf_dirs=[str(conf_dir)], plugin_dirs=PLUGIN_DIRS, write_default_conflist=False)
    manager = CNIManager(cfg, root=str(root), watch_interval=interval)
    await manager.start()
    good = json.dumps({"cniVersion": "1.0.0", "name": "bench", "plugins": [{"type": "loopback"}]})
    path = conf_dir / "10-bench.conflist"
    out = []
    try:
        for _ in range(changes):
            path.write_text("{ broken")
            await until(lambda: not manager.condition().status)
            await asyncio.sleep(random.uniform(0, interval))  # fix it at any moment of the poll cycle
            start = time.perf_counter()
            path.write_text(good)
            await until(lambda: manager.condition().status)
            out.append(time.perf_counter() - start)
    finally:
        await manager.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench network-watch",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--polls", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.getLogger("crib").setLevel(logging.ERROR)  # the readiness flips are the point, not news
    with tempfile.TemporaryDirectory() as tmp:
        conf_dir = Path(tmp) / "net.d"
        conf_dir.mkdir()
        for i in range(3):
            (conf_dir / f"{i}0-other.conf").write_text("{}")
        cost = poll_cost(conf_dir, args.polls)
        print(f"one poll: {cost * 1e6:.1f} us; at a {args.interval:g}s interval: "
              f"{cost / args.interval * 100:.4f}% of one core")
        latencies = asyncio.run(reaction(conf_dir, Path(tmp) / "root", args.changes, args.interval))
        q = statistics.quantiles(latencies, n=20)
        print(f"config fixed -> NetworkReady: p50 {statistics.median(latencies) * 1e3:.0f} ms, "
              f"p95 {q[18] * 1e3:.0f} ms, max {max(latencies) * 1e3:.0f} ms over {len(latencies)} changes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
