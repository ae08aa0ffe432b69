"""Container lifecycle events for GetContainerEvents (kubelet's evented PLEG).

Each subscriber has a bounded queue. A subscriber that falls behind by more than its queue is cut off
(its stream ends with an error) rather than slowing the daemon or silently missing events: kubelet then
reconnects and relists, which is exactly its recovery path.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass

from crib.errors import ResourceExhausted
from crib.state.records import ContainerRecord, SandboxRecord

QUEUE_SIZE = 1024


class EventKind(enum.Enum):
    CREATED = "created"
    STARTED = "started"
    STOPPED = "stopped"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerEvent:
    """One event, with snapshots of the container, its pod and the pod's containers at that moment."""

    kind: EventKind
    at_ns: int
    container: ContainerRecord
    sandbox: SandboxRecord | None
    pod_containers: tuple[ContainerRecord, ...]


_OVERFLOW = object()


class EventBus:
    """Fan-out of container events to any number of subscribers (see the module note)."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscribers: set[asyncio.Queue[object]] = set()

    def publish(self, event: ContainerEvent) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() >= self._queue_size - 1:
                self._subscribers.discard(queue)
                queue.put_nowait(_OVERFLOW)
            else:
                queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[ContainerEvent]:
        """Events from now on, until the caller stops iterating.

        Raises:
            ResourceExhausted: the subscriber fell more than the queue size behind.
        """
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is _OVERFLOW:
                    raise ResourceExhausted(f"container event stream fell {self._queue_size} events behind "
                                            "and was closed; reconnect and relist")
                assert isinstance(item, ContainerEvent)
                yield item
        finally:
            self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


__all__ = ["ContainerEvent", "EventBus", "EventKind"]
