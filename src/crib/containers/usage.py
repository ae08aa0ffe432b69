"""Which pods and containers a stats or metrics call reads; the reading itself is metrics.Sampler's.

Stats (ContainerStats, PodSandboxStats and their List/Stream forms), CRI metrics, the Prometheus scrape
and `crib top` all read through the one Sampler of the node, so a figure they share is read once per
`[metrics] max_age` whoever asks first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import Any

from crib.metrics import ContainerReading, PodReading, Sampler
from crib.state.records import ContainerRecord, Phase, SandboxRecord
from crib.state.store import RuntimeStore
from crib.system.cgstats import CgroupStats


def _created(store: RuntimeStore, sandbox_id: str) -> list[ContainerRecord]:
    return [c for c in store.containers_of(sandbox_id) if c.phase is Phase.CREATED]


async def container_stats(sampler: Sampler, recs: list[ContainerRecord]) -> list[ContainerReading]:
    """Readings of the given containers (an exited one reads with an empty cgroup)."""
    if not recs:
        return []
    return await asyncio.to_thread(sampler.containers, recs)


async def pod_stats(sampler: Sampler, store: RuntimeStore,
                    sandboxes: list[SandboxRecord]) -> list[PodReading]:
    """Readings of pods (ready or not) with every container of each that finished being created."""
    if not sandboxes:
        return []
    pods = [(s, _created(store, s.id)) for s in sandboxes]
    return await asyncio.to_thread(sampler.pods, pods)


async def metric_readings(sampler: Sampler, store: RuntimeStore) -> list[PodReading]:
    """What the metrics show: ready pods, with their containers that have a cgroup (created or running)."""
    pods = [(s, [c for c in _created(store, s.id) if not c.exited])
            for s in sorted(store.sandboxes.values(), key=lambda r: r.created_at) if s.ready]
    if not pods:
        return []
    return await asyncio.to_thread(functools.partial(sampler.pods, pods, full=True))


def runtime_stats(data: Mapping[str, Any]) -> CgroupStats:
    """A container's counters from its runtime's own stats (`runsc events --stats`, runc's stats event
    format): a sandboxed runtime runs containers in its sandbox's kernel, not in host cgroups of theirs."""
    cpu, memory, pids = data.get("cpu") or {}, data.get("memory") or {}, data.get("pids") or {}
    used = (memory.get("usage") or {}).get("usage")
    cache = memory.get("cache")
    return CgroupStats(timestamp_ns=time.time_ns(), cpu_usage_ns=(cpu.get("usage") or {}).get("total"),
                       memory_usage=used, memory_cache=cache,
                       memory_working_set=max(0, used - cache) if used is not None and cache is not None
                       else used, pids_current=pids.get("current"))


def with_runtime(readings: list[ContainerReading],
                 runtime: Mapping[str, CgroupStats]) -> list[ContainerReading]:
    """Readings with the runtime's counters in place of the host cgroup's where it gave some."""
    return [dataclasses.replace(r, cgroup=runtime[r.container.id], nano_cores=None)
            if r.container.id in runtime else r for r in readings]


__all__ = ["container_stats", "metric_readings", "pod_stats", "runtime_stats", "with_runtime"]
