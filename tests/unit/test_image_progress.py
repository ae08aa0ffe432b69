"""SingleFlight sharing and cancellation; the stall watchdog (stalled vs slow vs queued)."""

from __future__ import annotations

import asyncio

import pytest

from crib.errors import DeadlineExceeded
from crib.images.progress import PullProgress, SingleFlight, Transfer, run_with_watchdog


async def test_single_flight_runs_once_for_concurrent_callers() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    runs = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal runs
        runs += 1
        await gate.wait()
        return 42

    callers = [asyncio.create_task(flight.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    assert flight.running("k")
    gate.set()
    assert await asyncio.gather(*callers) == [42] * 5
    assert runs == 1
    assert not flight.running("k")
    assert await flight.run("k", work) == 42  # a later call runs again
    assert runs == 2


async def test_single_flight_survives_one_cancelled_caller_and_stops_when_all_leave() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    gate = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "done"

    first = asyncio.create_task(flight.run("k", work))
    second = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    assert not cancelled.is_set()  # the second caller still waits for it
    gate.set()
    assert await second == "done"
    gate.clear()
    third = asyncio.create_task(flight.run("j", work))
    await asyncio.sleep(0)
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    await asyncio.sleep(0)
    assert cancelled.is_set()  # nobody waits any more: the work is cancelled


async def test_single_flight_failure_reaches_every_caller() -> None:
    flight: SingleFlight[str, None] = SingleFlight()

    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("broken layer")

    results = await asyncio.gather(*(flight.run("k", boom) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)


async def test_watchdog_cancels_a_stalled_pull() -> None:
    progress = PullProgress(ref="x")
    transfer = Transfer(digest="sha256:a", size=100)
    transfer.start()
    progress.watch(transfer)
    cancelled = asyncio.Event()

    async def stalled() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    message = r"no progress for [\d.]+s \(phase: resolving, 0 of 100 bytes\)"
    with pytest.raises(DeadlineExceeded, match=message):
        await run_with_watchdog(stalled(), progress, 0.1, "pull of x", tick=0.01)
    assert cancelled.is_set()


async def test_watchdog_never_cuts_a_slow_pull_that_moves() -> None:
    progress = PullProgress(ref="x")
    transfer = Transfer(digest="sha256:a", size=10)
    progress.watch(transfer)
    transfer.start()

    async def slow() -> str:
        for _ in range(10):
            await asyncio.sleep(0.03)
            transfer.add(1)
        return "ok"

    # Ten times longer than the timeout in total, but never idle for as long as the timeout.
    assert await run_with_watchdog(slow(), progress, 0.1, "pull of x", tick=0.01) == "ok"


async def test_a_queued_transfer_is_not_stalled() -> None:
    progress = PullProgress(ref="x")
    queued = Transfer(digest="sha256:b", size=10)  # waiting for a download slot
    progress.watch(queued)

    async def waits() -> str:
        await asyncio.sleep(0.3)
        return "ok"

    assert await run_with_watchdog(waits(), progress, 0.1, "pull of x", tick=0.01) == "ok"


async def test_timeout_zero_means_never() -> None:
    async def quick() -> int:
        await asyncio.sleep(0.01)
        return 1

    assert await run_with_watchdog(quick(), PullProgress(), 0.0, "x") == 1
    snap = PullProgress(ref="r").snapshot()
    assert snap["ref"] == "r"
    assert snap["total_bytes"] == 0
