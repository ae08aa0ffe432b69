"""Which pods and containers a stats or metrics call reads; the reading itself is metrics.Sampler's.

Stats (ContainerStats, PodSandboxStats and their List/Stream forms), CRI metrics, the Prometheus scrape
and `crib top` all read through the one Sampler of the node, so a figure they share is read once per
`[metrics] max_age` whoever asks first.
"""

from __future__ import annotations

import asyncio
import functools

from crib.metrics import ContainerReading, PodReading, Sampler
from crib.state.records import ContainerRecord, Phase, SandboxRecord
from crib.state.store import RuntimeStore


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


__all__ = ["container_stats", "metric_readings", "pod_stats"]
