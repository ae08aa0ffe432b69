"""ProcessWatch: a pidfd per watched process tells the loop when it ends, whoever its parent is."""

from __future__ import annotations

import asyncio

from crib.system.pidwatch import ProcessWatch


async def _sleeper() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec("sleep", "30")


async def _end(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.kill()
    await child.wait()


async def test_the_end_of_a_watched_process_is_reported_once() -> None:
    gone: list[str] = []
    event = asyncio.Event()

    def on_gone(key: str) -> None:
        gone.append(key)
        event.set()

    watch = ProcessWatch(on_gone)
    child = await _sleeper()
    try:
        assert watch.watch("c1", child.pid)
        assert watch.watching("c1")
        child.kill()
        await asyncio.wait_for(event.wait(), 10)
        assert gone == ["c1"]
        assert not watch.watching("c1")
    finally:
        await _end(child)
        watch.close()


async def test_a_forgotten_or_replaced_watch_reports_nothing() -> None:
    gone: list[str] = []
    watch = ProcessWatch(gone.append)
    first, second = await _sleeper(), await _sleeper()
    try:
        assert watch.watch("c1", first.pid)
        assert watch.watch("c1", second.pid)  # replaces: the first one's end is not c1's any more
        await _end(first)
        watch.forget("c1")
        await _end(second)
        await asyncio.sleep(0)
        assert gone == []
    finally:
        await _end(first)
        await _end(second)
        watch.close()


async def test_a_process_already_gone_cannot_be_watched() -> None:
    watch = ProcessWatch(lambda key: None)
    child = await asyncio.create_subprocess_exec("true")
    await child.wait()
    assert not watch.watch("c1", child.pid)
    assert not watch.watching("c1")
