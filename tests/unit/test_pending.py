"""Name claims (kubelet's retries get the object being created) and per-object locks."""

from __future__ import annotations

import asyncio

import pytest

from crib.state.pending import KeyedLocks, PendingNames


async def test_a_retry_waits_for_the_creation_in_flight_and_gets_its_id() -> None:
    names = PendingNames(lambda name: None)
    release = asyncio.Event()

    async def first() -> str:
        async with names.claim("pod_a") as claim:
            assert not claim.existing
            await release.wait()
            claim.done("id-1")
            return "id-1"

    async def retry() -> str:
        async with names.claim("pod_a") as claim:
            return claim.existing or "created-twice"

    t1 = asyncio.ensure_future(first())
    await asyncio.sleep(0)
    t2 = asyncio.ensure_future(retry())
    await asyncio.sleep(0.01)
    assert not t2.done()
    release.set()
    assert await t1 == "id-1"
    assert await t2 == "id-1"


async def test_a_retry_after_a_failed_creation_creates_it_itself() -> None:
    names = PendingNames(lambda name: None)
    started = asyncio.Event()

    async def failing() -> None:
        async with names.claim("c") as claim:
            assert not claim.existing
            started.set()
            await asyncio.sleep(0.01)
            raise RuntimeError("runc failed")

    async def retry() -> str:
        await started.wait()
        async with names.claim("c") as claim:
            assert not claim.existing
            claim.done("id-2")
            return "id-2"

    results = await asyncio.gather(failing(), retry(), return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert results[1] == "id-2"
    assert not names.pending("c")


async def test_an_existing_object_answers_at_once() -> None:
    names = PendingNames({"n": "id-9"}.get)
    async with names.claim("n") as claim:
        assert claim.existing == "id-9"


async def test_an_error_in_the_block_is_not_swallowed() -> None:
    names = PendingNames(lambda name: None)
    with pytest.raises(ValueError, match="boom"):
        async with names.claim("x"):
            raise ValueError("boom")


async def test_keyed_locks_serialize_one_key_and_are_dropped_after_use() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(key: str, tag: str) -> None:
        async with locks.hold(key):
            order.append(tag + "+")
            await asyncio.sleep(0.01)
            order.append(tag + "-")

    await asyncio.gather(hold("a", "1"), hold("a", "2"), hold("b", "3"))
    assert order.index("1-") < order.index("2+")
    assert locks._locks == {}
