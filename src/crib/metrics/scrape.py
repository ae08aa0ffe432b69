"""One scrape of the node: counters and record counts on the event loop, readings and text in a thread.

Imported by the daemon only when `[metrics] address` is set (it pulls in prom.py, hence prometheus_client).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from crib.metrics import ops
from crib.metrics.prom import Exposition, NodeView
from crib.metrics.sampler import PodReading
from crib.state.records import ContainerRecord, SandboxRecord


def pod_states(pods: Iterable[SandboxRecord]) -> dict[str, int]:
    out = {"ready": 0, "notready": 0}
    for rec in pods:
        out["ready" if rec.ready else "notready"] += 1
    return out


def container_states(containers: Iterable[ContainerRecord]) -> dict[str, int]:
    out = {"created": 0, "running": 0, "exited": 0}
    for rec in containers:
        out["exited" if rec.exited else "running" if rec.running else "created"] += 1
    return out


class Scraper:
    """Renders the node's families for the endpoint (see the module note)."""

    def __init__(self, *, pods: Callable[[], Iterable[SandboxRecord]],
                 containers: Callable[[], Iterable[ContainerRecord]],
                 readings: Callable[[], Awaitable[list[PodReading]]] | None,
                 sessions: Callable[[], dict[str, int]] | None = None, psi: bool = False,
                 hugetlb: bool = False) -> None:
        self._pods = pods
        self._containers = containers
        self._readings = readings
        self._sessions = sessions
        self._psi = psi
        self._hugetlb = hugetlb
        self.exposition = Exposition()

    @property
    def content_type(self) -> str:
        return str(self.exposition.content_type)

    async def render(self) -> bytes:
        readings = await self._readings() if self._readings is not None else []
        view = NodeView(ops=ops.snapshot(), pods=pod_states(self._pods()),
                        containers=container_states(self._containers()),
                        sessions=self._sessions() if self._sessions is not None else {},
                        readings=readings, psi=self._psi, hugetlb=self._hugetlb)
        return await asyncio.to_thread(self.exposition.render, view)


__all__ = ["Scraper", "container_states", "pod_states"]
