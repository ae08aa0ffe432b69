"""Single-use stream tokens, and the book of live sessions (counts per kind, shutdown).

Tokens: Exec, Attach and PortForward each mint one URL; its token is 32 random bytes (URL-safe base64),
good for one connection, and forgotten unused after the creation timeout. A token that is unknown, used
or expired is indistinguishable from any other wrong path (404): nothing about other sessions leaks. The
number of live tokens is bounded (kubelet's request cache holds 1000) so a caller minting URLs it never
uses cannot grow the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from crib.errors import ResourceExhausted
from crib.streaming.backend import Kind, StreamRequest

MAX_TOKENS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The [stream] timeouts, in seconds (idle_timeout inf = never)."""

    creation_timeout: float
    idle_timeout: float


class TokenCache:
    """Requests waiting for their client, by token (see the module note)."""

    def __init__(self, ttl: float, *, max_tokens: int = MAX_TOKENS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_tokens = max_tokens
        self._clock = clock
        self._entries: collections.OrderedDict[str, tuple[float, StreamRequest]] = collections.OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            token, (deadline, _) = next(iter(self._entries.items()))
            if deadline > now:
                break
            del self._entries[token]

    def issue(self, request: StreamRequest) -> str:
        """A fresh token for request.

        Raises:
            ResourceExhausted: too many URLs are waiting for their client.
        """
        self._expire()
        if len(self._entries) >= self.max_tokens:
            raise ResourceExhausted(
                f"{len(self._entries)} streaming URLs are waiting to be used (at most {self.max_tokens}); "
                f"connect to them or wait up to {self.ttl:g}s for them to expire")
        token = secrets.token_urlsafe(32)
        self._entries[token] = (self._clock() + self.ttl, request)
        return token

    def take(self, token: str) -> StreamRequest | None:
        """The request of a live token, which is used up; None for an unknown, used or expired one."""
        self._expire()
        entry = self._entries.pop(token, None)
        return entry[1] if entry is not None else None


class Sessions:
    """Live sessions and their tasks: counts per kind for metrics, and an end for all at shutdown."""

    def __init__(self) -> None:
        self._live: dict[asyncio.Task[Any], Kind] = {}
        self._handshakes: set[asyncio.Task[Any]] = set()
        self.started: collections.Counter[Kind] = collections.Counter()

    def counts(self) -> dict[str, int]:
        """Live sessions per kind: {"exec": n, "attach": n, "portforward": n} (every kind present)."""
        counts = {kind.value: 0 for kind in Kind}
        for kind in self._live.values():
            counts[kind.value] += 1
        return counts

    def spawn(self, kind: Kind, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a session in its own task, counted under kind while it lives."""
        task = asyncio.ensure_future(coro)
        self._live[task] = kind
        self.started[kind] += 1
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._live.pop(task, None)
        if not task.cancelled():
            task.exception()  # a failure was logged by the session itself; retrieved so asyncio stays quiet

    async def close(self, grace: float) -> None:
        """End every session: cancelled sessions kill their processes and close their connections."""
        tasks = list(self._live)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)


__all__ = ["MAX_TOKENS", "Limits", "Sessions", "TokenCache"]
