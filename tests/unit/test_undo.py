"""The undo stack: reverse order, every step tried, shielded from cancellation, nothing on success."""

from __future__ import annotations

import asyncio

import pytest

from crib.state.undo import Undo


async def test_undos_run_in_reverse_and_failures_do_not_stop_the_rest() -> None:
    ran: list[str] = []

    async def async_step() -> None:
        ran.append("b")

    def failing() -> None:
        ran.append("c")
        raise OSError("umount failed")

    async def create() -> None:
        async with Undo("test") as undo:
            undo.push("a", lambda: ran.append("a"))
            undo.push("b", async_step)
            undo.push("c", failing)
            raise RuntimeError("step 4")

    with pytest.raises(RuntimeError, match="step 4"):
        await create()
    assert ran == ["c", "b", "a"]


async def test_nothing_runs_on_success() -> None:
    ran: list[str] = []
    async with Undo("test") as undo:
        undo.push("a", lambda: ran.append("a"))
        undo.commit()
    async with Undo("test") as undo:
        undo.push("a", lambda: ran.append("a"))
    assert ran == []


async def test_a_cancelled_creation_still_undoes_everything() -> None:
    ran: list[str] = []
    entered = asyncio.Event()

    async def slow_undo() -> None:
        await asyncio.sleep(0.05)
        ran.append("slow")

    async def create() -> None:
        async with Undo("test") as undo:
            undo.push("first", lambda: ran.append("first"))
            undo.push("slow", slow_undo)
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.ensure_future(create())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ran == ["slow", "first"]


async def test_a_stuck_undo_is_bounded_by_its_own_timeout() -> None:
    ran: list[str] = []

    async def stuck() -> None:
        await asyncio.sleep(10)

    async def create() -> None:
        async with Undo("test", timeout=0.05) as undo:
            undo.push("a", lambda: ran.append("a"))
            undo.push("stuck", stuck)
            raise RuntimeError("fail")

    with pytest.raises(RuntimeError):
        await create()
    assert ran == ["a"]
