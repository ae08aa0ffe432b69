"""crib's own counters: RPCs, image pulls, CNI calls, restored objects. Plain Python, always on.

Every RPC passes through the interceptor, which calls OPERATIONS.record() once per call: two dict look-ups,
three integer or float additions and a bisect, with no allocation for a method and code seen before. That
is cheap enough to leave on when no metrics endpoint is configured, so the figures are right from the
daemon's first call, and it keeps prometheus_client (imported only with `[metrics] address` set) off the
hot path: prom.py turns these counters into Prometheus families at scrape time.

Everything here is updated on the event loop; the scrape copies it there (snapshot()) before formatting.
"""

from __future__ import annotations

import bisect
import copy
from dataclasses import dataclass, field
from typing import Any

# Upper bounds (seconds) of the duration histograms: sub-millisecond status calls up to minute-long pulls.
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                              10.0, 30.0, 60.0, 120.0)


@dataclass(slots=True)
class Histogram:
    """Observation counts per bucket (not cumulative; the last slot is +Inf) and their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class Operations:
    """Calls per (operation, status code) and call durations per operation."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[Any, int]] = {}
        self.durations: dict[str, Histogram] = {}

    def record(self, operation: str, code: Any, seconds: float) -> None:
        """One finished RPC; code is the grpc.StatusCode it ended with (named at scrape time)."""
        codes = self.calls.get(operation)
        if codes is None:
            codes = self.calls[operation] = {}
            self.durations[operation] = Histogram()
        codes[code] = codes.get(code, 0) + 1
        self.durations[operation].observe(seconds)


class Counters:
    """The node-wide counters other than RPCs (see the module note)."""

    def __init__(self) -> None:
        self.image_pulls: dict[str, int] = {}
        self.image_pull_bytes = 0
        self.cni: dict[tuple[str, str], Histogram] = {}
        self.restored = 0

    def image_pull(self, outcome: str) -> None:
        """A finished PullImage: "success", "failure" or "cancelled"."""
        self.image_pulls[outcome] = self.image_pulls.get(outcome, 0) + 1

    def pulled_bytes(self, count: int) -> None:
        """Bytes of layers and configs fetched from a registry."""
        self.image_pull_bytes += count

    def cni_call(self, operation: str, network: str, seconds: float) -> None:
        """One CNI operation (ADD, DEL, CHECK, GC, STATUS) on a network, plugins of the chain included."""
        key = (operation, network)
        hist = self.cni.get(key)
        if hist is None:
            hist = self.cni[key] = Histogram()
        hist.observe(seconds)


OPERATIONS = Operations()
COUNTERS = Counters()


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A consistent copy of every counter, taken on the event loop, formatted elsewhere."""

    calls: dict[str, dict[Any, int]]
    durations: dict[str, Histogram]
    image_pulls: dict[str, int]
    image_pull_bytes: int
    cni: dict[tuple[str, str], Histogram]
    restored: int


def snapshot() -> Snapshot:
    return Snapshot(calls=copy.deepcopy(OPERATIONS.calls), durations=copy.deepcopy(OPERATIONS.durations),
                    image_pulls=dict(COUNTERS.image_pulls), image_pull_bytes=COUNTERS.image_pull_bytes,
                    cni=copy.deepcopy(COUNTERS.cni), restored=COUNTERS.restored)


__all__ = ["BUCKETS", "COUNTERS", "OPERATIONS", "Counters", "Histogram", "Operations", "Snapshot", "snapshot"]
