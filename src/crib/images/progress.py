"""Pull progress, the stall watchdog, and single-flight work sharing.

A pull is cancelled when nothing it waits for has moved for `image.pull_progress_timeout`: not when it is
slow. Progress is measured per transfer (one blob download or one layer unpack), and a transfer shared by
several pulls (single-flight) counts for each of them. A transfer still waiting for a free download slot
is not stalled, it is queued. The watchdog also writes the periodic "pull progress" log line.

SingleFlight runs one task per key however many callers ask; a caller that gives up (its RPC was
cancelled) leaves the others waiting, and the task is cancelled only when nobody waits any more (that
last caller then waits for the task's cleanup before it returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from crib import log
from crib.errors import DeadlineExceeded

_log = log.get(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

LOG_INTERVAL = 10.0


@dataclass(slots=True)
class Transfer:
    """One blob download or layer unpack; updated from the loop and from worker threads."""

    digest: str
    size: int
    done: int = 0
    queued: bool = True
    finished: bool = False
    last: float = field(default_factory=time.monotonic)

    def add(self, n: int) -> None:
        self.done += n
        self.last = time.monotonic()

    def start(self) -> None:
        self.queued = False
        self.last = time.monotonic()

    def finish(self) -> None:
        self.finished = True
        self.done = max(self.done, self.size)
        self.last = time.monotonic()


@dataclass(slots=True)
class PullProgress:
    """What one pull is doing, for its watchdog, the log and `crib image pull`'s progress bar."""

    ref: str = ""
    phase: str = "resolving"
    transfers: dict[str, Transfer] = field(default_factory=dict)
    last: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last = time.monotonic()

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.touch()

    def watch(self, transfer: Transfer) -> None:
        self.transfers[transfer.digest] = transfer
        self.touch()

    def last_activity(self) -> float:
        now = time.monotonic()
        latest = self.last
        for t in self.transfers.values():
            if t.finished:
                continue
            latest = max(latest, now if t.queued else t.last)
        return latest

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the CLI and the log line."""
        total = sum(t.size for t in self.transfers.values())
        done = sum(min(t.done, t.size) for t in self.transfers.values())
        return {
            "ref": self.ref, "phase": self.phase, "total_bytes": total, "done_bytes": done,
            "layers": len(self.transfers), "layers_done": sum(t.finished for t in self.transfers.values()),
            "elapsed_s": round(time.monotonic() - self.started, 3),
        }

    def layer_snapshot(self) -> list[dict[str, Any]]:
        """Per layer, for the CLI's per-layer bars (not in snapshot(): that one is also logged)."""
        return [{"digest": t.digest, "size": t.size, "done": min(t.done, t.size),
                 "state": "done" if t.finished else "queued" if t.queued else "active"}
                for t in self.transfers.values()]


async def run_with_watchdog(work: Awaitable[T], progress: PullProgress, timeout: float, what: str, *,
                            tick: float = 1.0) -> T:
    """Await work; cancel it if progress stalls for timeout seconds (0 = never); log progress meanwhile.

    tick is how often progress is looked at (tests shorten it).

    Raises:
        DeadlineExceeded: no progress for timeout seconds.
    """
    task = asyncio.ensure_future(work)
    next_log = time.monotonic() + LOG_INTERVAL
    stalled_for = 0.0
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=tick)
            if done:
                return task.result()
            now = time.monotonic()
            if now >= next_log:
                next_log = now + LOG_INTERVAL
                log.event(_log, logging.INFO, "pull progress", **progress.snapshot())
            stalled_for = now - progress.last_activity()
            if timeout > 0 and stalled_for >= timeout:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise DeadlineExceeded(
                    f"{what}: no progress for {stalled_for:.3g}s (phase: {progress.phase}, "
                    f"{progress.snapshot()['done_bytes']} of {progress.snapshot()['total_bytes']} bytes); "
                    "the pull "
                    "was cancelled. Check that the registry is reachable, or raise "
                    "image.pull_progress_timeout")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class _Flight(Generic[T]):
    __slots__ = ("abandoned", "task", "waiters")

    def __init__(self, task: asyncio.Future[T]) -> None:
        self.task = task
        self.waiters = 0
        self.abandoned = False


class SingleFlight(Generic[K, T]):
    """One running task per key, shared by every caller (see the module note)."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[T]] = {}

    def running(self, key: K) -> bool:
        flight = self._flights.get(key)
        return flight is not None and not flight.task.done() and not flight.abandoned

    async def run(self, key: K, factory: Callable[[], Awaitable[T]]) -> T:
        while True:
            flight = self._flights.get(key)
            if flight is not None and flight.abandoned:
                # Its last caller left and it is being cancelled: let it finish, then start afresh.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(flight.task)
                continue
            if flight is None or flight.task.done():
                task: asyncio.Future[T] = asyncio.ensure_future(factory())
                flight = _Flight(task)
                self._flights[key] = flight
                task.add_done_callback(functools.partial(self._on_done, key, flight))
            break
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if not flight.task.done():
                flight.waiters -= 1
                if flight.waiters == 0:
                    flight.abandoned = True
                    flight.task.cancel()
                    # The last caller waits for the work's own cleanup: a cancelled pull leaves nothing.
                    while not flight.task.done():
                        with contextlib.suppress(BaseException):
                            await asyncio.shield(flight.task)
                raise
            flight.waiters -= 1
            raise
        else:
            flight.waiters -= 1

    def _on_done(self, key: K, flight: _Flight[T], _: object) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            flight.task.exception()  # retrieved: the waiters report it, asyncio must not warn


__all__ = ["PullProgress", "SingleFlight", "Transfer", "run_with_watchdog"]
