"""The undo stack of a multi-step creation (STYLE rule 4: register the undo right after the do).

Each undo runs shielded from the request's cancellation and bounded by its own timeout, in reverse
order, and a failing undo is logged and does not stop the others: the aim is to leave nothing, and one
stuck step must not keep the rest from trying. On success the caller calls `commit()` (pop_all).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from crib import log

_log = log.get(__name__)

UNDO_TIMEOUT = 30.0


class Undo:
    """An async context manager collecting undo steps; see the module note."""

    def __init__(self, what: str, timeout: float = UNDO_TIMEOUT) -> None:
        self._what = what
        self._timeout = timeout
        self._steps: list[tuple[str, Callable[[], Any]]] = []

    def push(self, label: str, fn: Callable[[], Awaitable[Any] | Any]) -> None:
        """Register fn (sync or async, no arguments) to run if the creation fails."""
        self._steps.append((label, fn))

    def commit(self) -> None:
        """The creation succeeded: forget every undo."""
        self._steps.clear()

    async def __aenter__(self) -> Undo:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is None:
            self._steps.clear()
            return
        await self.run_all()

    async def run_all(self) -> None:
        while self._steps:
            label, fn = self._steps.pop()
            task = asyncio.ensure_future(_call(fn))
            try:
                await asyncio.wait_for(asyncio.shield(task), self._timeout)
            except asyncio.CancelledError:
                # Cancelled again while undoing: let this undo finish in the background, keep going.
                continue
            except Exception as err:
                log.event(_log, 40, "undo step failed", what=self._what, step=label, error=str(err))


async def _call(fn: Callable[[], Any]) -> None:
    result = fn()
    if inspect.isawaitable(result):
        await result


__all__ = ["UNDO_TIMEOUT", "Undo"]
