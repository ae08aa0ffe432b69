"""In-flight creations by name, and per-object locks.

kubelet gives RunPodSandbox and CreateContainer a deadline and, when it passes, sends the same request
again, with the same name. The second request must not fail with "name already reserved" nor create a
twin: it waits for the first to finish and answers with its id. If the first failed, the name is free
again and the second attempt does the work itself.

Everything here runs on the event loop; dict operations between awaits are atomic, so no lock guards
the tables themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Claim:
    """The outcome of claiming a name: either an existing object's id, or the right to create it."""

    existing: str = ""
    created: str = ""

    def done(self, object_id: str) -> None:
        """Report the id of the object just created under the claimed name."""
        self.created = object_id


class PendingNames:
    """Names being created right now, with a future each for retries to wait on."""

    def __init__(self, lookup: Callable[[str], str | None]) -> None:
        self._lookup = lookup  # name -> id of an object already recorded under it
        self._pending: dict[str, asyncio.Future[str]] = {}

    @contextlib.asynccontextmanager
    async def claim(self, name: str) -> AsyncIterator[Claim]:
        """Claim name for a creation; yields Claim(existing=id) when the object exists or was being
        created by an earlier request that succeeded. The block must call claim.done(id) on success."""
        existing: str | None = None
        while (fut := self._pending.get(name)) is not None:
            try:
                existing = await asyncio.shield(fut)
                break
            except Exception:  # the earlier attempt failed and released the name: try ourselves
                continue
        if existing is None:
            existing = self._lookup(name)
        if existing is not None:
            yield Claim(existing=existing)
            return
        loop = asyncio.get_running_loop()
        fut = self._pending[name] = loop.create_future()
        claim = Claim()
        try:
            yield claim
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("creation cancelled"))
            fut.exception()  # mark retrieved: nobody may be waiting
            raise
        finally:
            del self._pending[name]
        if claim.created:
            fut.set_result(claim.created)
        else:
            fut.set_exception(RuntimeError(f"creation of {name!r} returned no id"))
            fut.exception()

    def pending(self, name: str) -> bool:
        return name in self._pending


class KeyedLocks:
    """One asyncio.Lock per object id, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


__all__ = ["Claim", "KeyedLocks", "PendingNames"]
