"""Connected NRI plugins: registration, ordered delivery, timeouts, failure isolation.

Design note. Every plugin has its own FIFO queue of deliveries and one worker task that sends them, one
at a time, in queue order. An event is *emitted* synchronously (no await between the lifecycle step and
the enqueueing), so each plugin sees the events of every pod and container in the order they happened.
Notifications are ready at once; a request that plugins may answer with changes (CreateContainer,
UpdateContainer) reserves its place in every queue at emission and is then made ready plugin by plugin in
index order, each one seeing what the ones before it changed.

A plugin joins in three steps, bounded by registration_timeout each: it registers (name and index), is
configured (its event subscription), and is synchronized. Synchronization is where events must be neither
lost nor doubled: the snapshot of pods and containers and the plugin's entry into the delivery list
happen in the same synchronous step, with the Synchronize call as the first item of its queue. What was
emitted before that step is in the snapshot; what is emitted after it queues behind Synchronize.

Bounds. Each call is bounded by request_timeout (Synchronize by registration_timeout); a plugin that does
not answer in time is closed, its queued deliveries answered "nothing" and the lifecycle goes on without
it, as containerd does. A plugin whose backlog passes MAX_BACKLOG is closed too, so no queue grows without
bound. An error status from a plugin fails the step it was asked about, where the step may fail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from crib import log, proc
from crib._proto.nri.v1alpha1 import api_pb2 as api
from crib.errors import PluginError
from crib.nri import ttrpc
from crib.nri.adjust import Owners, Updates
from crib.nri.peer import Peer

_log = log.get(__name__)

ALL_EVENTS = (1 << (api.LAST - 1)) - 1
MAX_BACKLOG = 256
SYNC_BUDGET = 3 << 20  # bytes of pods and containers per Synchronize message (the ttrpc limit is 4 MiB)
SYNCHRONIZE = 0  # the pseudo-event of a Synchronize delivery

METHODS: dict[int, str] = {
    api.RUN_POD_SANDBOX: "RunPodSandbox", api.STOP_POD_SANDBOX: "StopPodSandbox",
    api.REMOVE_POD_SANDBOX: "RemovePodSandbox", api.CREATE_CONTAINER: "CreateContainer",
    api.POST_CREATE_CONTAINER: "PostCreateContainer", api.START_CONTAINER: "StartContainer",
    api.POST_START_CONTAINER: "PostStartContainer", api.UPDATE_CONTAINER: "UpdateContainer",
    api.POST_UPDATE_CONTAINER: "PostUpdateContainer", api.STOP_CONTAINER: "StopContainer",
    api.REMOVE_CONTAINER: "RemoveContainer", SYNCHRONIZE: "Synchronize",
}
# Events an older plugin (no dedicated method: UNIMPLEMENTED) still gets through StateChange.
_STATE_CHANGE = frozenset({api.RUN_POD_SANDBOX, api.STOP_POD_SANDBOX, api.REMOVE_POD_SANDBOX,
                           api.POST_CREATE_CONTAINER, api.START_CONTAINER, api.POST_START_CONTAINER,
                           api.POST_UPDATE_CONTAINER, api.REMOVE_CONTAINER})
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_INDEX = re.compile(r"^[0-9]{2}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    registration_timeout: float
    request_timeout: float
    runtime_name: str
    runtime_version: str
    nri_version: str


@dataclass(slots=True, kw_only=True)
class Launched:
    """A pre-installed plugin crib started: known by its file name, given its configuration."""

    name: str
    idx: str
    config: str
    child: proc.Child


@dataclass(eq=False, slots=True)
class Delivery:
    """One event for one plugin (see the module note). request None = skip it."""

    event: int
    request: Any = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    result: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def __post_init__(self) -> None:
        # An error nobody awaits any more (its chain was cancelled) must not be reported as unretrieved.
        self.result.add_done_callback(lambda f: f.cancelled() or f.exception())

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        if self.result.done():
            return
        if error is None:
            self.result.set_result(value)
        else:
            self.result.set_exception(error)


class Plugin:
    """One connected plugin (see the module note)."""

    def __init__(self, peer: Peer, plugins: Plugins, launched: Launched | None) -> None:
        self.peer = peer
        self._plugins = plugins
        self.launched = launched
        self.name = launched.name if launched else ""
        self.idx = launched.idx if launched else ""
        self.events = 0
        self.closed = False
        self.registered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue: collections.deque[Delivery] = collections.deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    @property
    def full_name(self) -> str:
        return f"{self.idx or '??'}-{self.name or 'plugin'}"

    def wants(self, event: int) -> bool:
        return bool(self.events & (1 << (event - 1)))

    # ------------------------------------------------------------------------------- the Runtime service

    async def handle_register(self, req: api.RegisterPluginRequest) -> api.Empty:
        if self.launched is None:
            if not _NAME.match(req.plugin_name):
                self._reject(f"plugin name {req.plugin_name!r} must be non-empty letters, digits, '_.+-'")
            if not _INDEX.match(req.plugin_idx):
                self._reject(f"plugin index {req.plugin_idx!r} must be two digits")
            self.name, self.idx = req.plugin_name, req.plugin_idx
        if not self.registered.done():
            self.registered.set_result(None)
        log.event(_log, 20, "NRI plugin registered", plugin=self.full_name,
                  nri_version=req.NRI_version or "unknown", launched=self.launched is not None)
        return api.Empty()

    def _reject(self, why: str) -> None:
        if not self.registered.done():
            self.registered.set_exception(PluginError(why))
            self.registered.exception()
        raise ttrpc.RemoteError(ttrpc.INVALID_ARGUMENT, why)

    async def handle_update(self, req: api.UpdateContainersRequest) -> api.UpdateContainersResponse:
        if self.closed or self._worker is None:
            raise ttrpc.RemoteError(ttrpc.FAILED_PRECONDITION, "plugin is not synchronized yet")
        updates = Updates(Owners())
        try:
            updates.add(self.full_name, req.update, req.evict)
        except PluginError as exc:
            raise ttrpc.RemoteError(ttrpc.INVALID_ARGUMENT, str(exc)) from exc
        failed = await self._plugins.apply_updates(self.full_name, updates)
        return api.UpdateContainersResponse(failed=[u for u in req.update if u.container_id in failed])

    # -------------------------------------------------------------------------------------- delivery

    def enqueue(self, delivery: Delivery) -> None:
        if self.closed:
            delivery.ready.set()
            delivery.finish(None)
            return
        self._queue.append(delivery)
        self._wake.set()
        if len(self._queue) > MAX_BACKLOG:
            self.close(f"more than {MAX_BACKLOG} events waiting; the plugin does not keep up")

    def start(self) -> None:
        self._worker = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        while not self.closed:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            delivery = self._queue[0]
            await delivery.ready.wait()
            if self._queue and self._queue[0] is delivery:
                self._queue.popleft()
            if delivery.request is None or self.closed:
                delivery.finish(None)
                continue
            try:
                answer = await self._send(delivery)
            except PluginError as exc:
                delivery.finish(error=exc)
                continue
            delivery.finish(answer)

    async def _send(self, delivery: Delivery) -> Any:
        method = METHODS[delivery.event]
        timeout = self._plugins.settings.request_timeout
        try:
            if delivery.event == SYNCHRONIZE:
                return await self._synchronize(delivery.request)
            try:
                return await self.peer.call(method, delivery.request, timeout)
            except ttrpc.RemoteError as exc:
                if exc.code != ttrpc.UNIMPLEMENTED or delivery.event not in _STATE_CHANGE:
                    raise
            req = delivery.request
            change = api.StateChangeEvent(event=delivery.event, pod=req.pod)  # type: ignore[arg-type]
            if "container" in req.DESCRIPTOR.fields_by_name and req.HasField("container"):
                change.container.CopyFrom(req.container)
            await self.peer.call("StateChange", change, timeout)
            return None
        except TimeoutError:
            self.close(f"no answer to {method} within {timeout:g}s (request_timeout)")
        except ttrpc.Closed:
            self.close(f"connection lost during {method}")
        except ttrpc.ProtocolError as exc:
            self.close(f"malformed answer to {method}: {exc}")
        except ttrpc.RemoteError as exc:
            raise PluginError(f"NRI plugin {self.full_name} failed {method}: {exc.message}") from exc
        return None

    async def _synchronize(self, chunks: list[api.SynchronizeRequest]) -> Any:
        timeout = self._plugins.settings.registration_timeout
        answer: Any = None
        try:
            async with asyncio.timeout(timeout):
                for chunk in chunks:
                    answer = await self.peer.call("Synchronize", chunk, timeout)
                    if chunk.more and (answer.update or not answer.more):
                        self.close("plugin does not handle a Synchronize split into several messages")
                        return None
        except TimeoutError:
            self.close(f"no answer to Synchronize within {timeout:g}s (registration_timeout)")
            return None
        return answer

    def close(self, reason: str) -> None:
        """Forget the plugin: close its connection, answer its queue with nothing, stop a launched one."""
        if self.closed:
            return
        self.closed = True
        log.event(_log, 30, "NRI plugin disconnected", plugin=self.full_name, reason=reason)
        self.peer.close(reason)
        if not self.registered.done():
            self.registered.set_exception(PluginError(reason))
            self.registered.exception()
        while self._queue:
            d = self._queue.popleft()
            d.ready.set()
            d.finish(None)
        self._wake.set()
        self._plugins.forget(self)
        if self.launched is not None:
            self._plugins.background(self.launched.child.kill())


class Plugins:
    """The registry: plugins by index order, event emission, joining (see the module note)."""

    def __init__(self, settings: Settings, *, snapshot: Callable[[], tuple[list[Any], list[Any]]],
                 apply_updates: Callable[[str, Updates], Awaitable[list[str]]]) -> None:
        self.settings = settings
        self._snapshot = snapshot
        self.apply_updates = apply_updates
        self.attached: list[Plugin] = []
        self._all: set[Plugin] = set()
        self._watchers: set[asyncio.Task[None]] = set()

    def background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def forget(self, plugin: Plugin) -> None:
        self._all.discard(plugin)
        if plugin in self.attached:
            self.attached.remove(plugin)

    def wanting(self, event: int) -> list[Plugin]:
        return [p for p in self.attached if p.wants(event) and not p.closed]

    # ------------------------------------------------------------------------------------------ joining

    async def connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      launched: Launched | None = None) -> Plugin | None:
        """Register, configure and synchronize a plugin on a fresh connection; None if it failed."""
        plugin: Plugin | None = None

        async def register(req: api.RegisterPluginRequest) -> api.Empty:
            assert plugin is not None
            return await plugin.handle_register(req)

        async def update(req: api.UpdateContainersRequest) -> api.UpdateContainersResponse:
            assert plugin is not None
            return await plugin.handle_update(req)

        peer = Peer(reader, writer, side="runtime",
                    handlers={"RegisterPlugin": register, "UpdateContainers": update})
        plugin = Plugin(peer, self, launched)
        self._all.add(plugin)
        peer.start()
        self.background(self._watch(plugin))
        try:
            await self._join(plugin)
        except (PluginError, TimeoutError, ttrpc.Closed, ttrpc.RemoteError, ttrpc.ProtocolError) as exc:
            plugin.close(f"could not join: {exc}")
            return None
        return None if plugin.closed else plugin

    async def _watch(self, plugin: Plugin) -> None:
        await plugin.peer.wait_closed()
        plugin.close(plugin.peer.reason or "connection closed")

    async def _join(self, plugin: Plugin) -> None:
        s = self.settings
        async with asyncio.timeout(s.registration_timeout):
            await plugin.registered
        reply = await plugin.peer.call("Configure", api.ConfigureRequest(
            config=plugin.launched.config if plugin.launched else "", runtime_name=s.runtime_name,
            runtime_version=s.runtime_version, registration_timeout=int(s.registration_timeout * 1000),
            request_timeout=int(s.request_timeout * 1000), NRI_version=s.nri_version), s.registration_timeout)
        events = reply.events or ALL_EVENTS
        if events & ~ALL_EVENTS:
            raise PluginError(f"plugin {plugin.full_name} subscribed to unknown events (mask {events:#x})")
        plugin.events = events
        # The step that must not await (see the module note): snapshot, join the list, queue Synchronize.
        pods, containers = self._snapshot()
        sync = Delivery(SYNCHRONIZE, _sync_chunks(pods, containers))
        sync.ready.set()
        plugin.enqueue(sync)
        self.attached.append(plugin)
        self.attached.sort(key=lambda p: (p.idx, p.name))
        plugin.start()
        answer = await sync.result
        if plugin.closed:
            return
        log.event(_log, 20, "NRI plugin synchronized", plugin=plugin.full_name, pods=len(pods),
                  containers=len(containers), order=",".join(p.full_name for p in self.attached))
        if answer is not None and answer.update:
            updates = Updates(Owners())
            updates.add(plugin.full_name, answer.update)
            await self.apply_updates(plugin.full_name, updates)

    # ---------------------------------------------------------------------------------------- emission

    def reserve(self, event: int) -> list[tuple[Plugin, Delivery]]:
        """Places in the queues of the plugins that want event, taken now; chain() fills them in order.

        The caller must start chain() on them at once (or in the order it reserved several): a place left
        unfilled holds up its plugin's queue.
        """
        out = []
        for plugin in self.wanting(event):
            d = Delivery(event)
            plugin.enqueue(d)
            out.append((plugin, d))
        return out

    @staticmethod
    async def chain(reserved: list[tuple[Plugin, Delivery]], build: Callable[[], Message],
                    take: Callable[[Plugin, Any], None]) -> None:
        """Ask each reserved plugin in turn: build() its request from the state so far, take() its answer.

        A plugin's error (or take() refusing an answer) ends the chain; the places not yet used are
        released so that no queue waits on them.
        """
        try:
            for plugin, d in reserved:
                if plugin.closed:
                    continue
                d.request = build()
                d.ready.set()
                answer = await d.result
                if answer is not None:
                    take(plugin, answer)
        finally:
            for _plugin, d in reserved:
                if not d.ready.is_set():
                    d.ready.set()  # request None: the worker skips it

    async def close(self) -> None:
        for plugin in list(self._all):
            plugin.close("crib is shutting down")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(plugin.peer.wait_closed(), 2.0)
            if plugin.launched is not None:
                await plugin.launched.child.kill()


def _sync_chunks(pods: list[Any], containers: list[Any]) -> list[api.SynchronizeRequest]:
    """Synchronize messages of at most SYNC_BUDGET bytes each, `more` set on all but the last."""
    chunks: list[api.SynchronizeRequest] = []
    current, size = api.SynchronizeRequest(), 0
    for kind, items in (("pods", pods), ("containers", containers)):
        for item in items:
            n = item.ByteSize() + 8
            if size + n > SYNC_BUDGET and size:
                chunks.append(current)
                current, size = api.SynchronizeRequest(), 0
            getattr(current, kind).append(item)
            size += n
    chunks.append(current)
    for chunk in chunks[:-1]:
        chunk.more = True
    return chunks


__all__ = ["ALL_EVENTS", "METHODS", "Delivery", "Launched", "Plugin", "Plugins", "Settings"]
