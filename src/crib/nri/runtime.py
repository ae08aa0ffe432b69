"""NRI in crib: the lifecycle hooks (crib.hooks.LifecycleHooks) backed by plugins.

Design note. Two halves. This module is all that is loaded while no plugin has come: it keeps the *view*
- every pod and container announced to plugins so far, with whether its stop was announced - and the
socket. Each hook updates the view and, with no plugin attached, returns: a few dictionary operations per
call. The first plugin loads the other half (ttrpc, the multiplexer, the NRI messages, plugins.py).

The view, not the state store, is what a joining plugin is synchronized with. Its entries change at the
moment an event is emitted (see plugins.py), so "in the snapshot" and "told by an event" never overlap and
never leave a gap: a container whose CreateContainer went out before a plugin joined is in that plugin's
snapshot, even while still being created; one created later reaches it through CreateContainer.

Every pod and container gets a stop before its removal: RemovePodSandbox of a pod never stopped, and
RemoveContainer of a container whose exit was never recorded (an undone creation), are preceded by
StopPodSandbox / StopContainer. Each is emitted once, however often the lifecycle repeats a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crib import __version__, log
from crib.config import NriConfig
from crib.errors import CribError, PluginError
from crib.hooks import ContainerStep, PodStep
from crib.state.records import ContainerRecord, SandboxRecord

if TYPE_CHECKING:
    from crib.nri.adjust import Updates
    from crib.nri.plugins import Plugin, Plugins

_log = log.get(__name__)

SOCKET_MODE = 0o660
# The NRI API release whose api.proto crib's proto is typed after (told to plugins in Configure).
NRI_VERSION = "v0.12.1"


class NodeAccess(Protocol):
    """What NRI needs of the node: its objects at start-up, specs, and updates/evictions plugins ask for."""

    def pods(self) -> Iterable[SandboxRecord]:
        """The pods that exist (created, not being removed)."""

    def containers(self) -> Iterable[ContainerRecord]:
        """The containers that exist (created, not being removed)."""

    def spec(self, container_id: str) -> dict[str, Any] | None:
        """The container's OCI spec as it runs; None when it has none (yet)."""

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """Update a container's linux.resources (the fields given); raises CribError."""

    async def evict(self, container_id: str, reason: str) -> None:
        """Stop a container a plugin evicts."""


class NriRuntime:
    """See the module note. bind() the node, then start(); close() on the way out."""

    def __init__(self, cfg: NriConfig) -> None:
        self.cfg = cfg
        self._node: NodeAccess | None = None
        self._pods: dict[str, SandboxRecord] = {}
        self._ctrs: dict[str, ContainerRecord] = {}
        self._pods_stopped: set[str] = set()
        self._ctrs_stopped: set[str] = set()
        self._msgs: dict[str, Any] = {}  # container id -> its NRI message, kept while plugins are attached
        self._plugins: Plugins | None = None
        self._server: asyncio.AbstractServer | None = None
        self._socket_inode: tuple[int, int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def bind(self, node: NodeAccess) -> None:
        self._node = node

    # ------------------------------------------------------------------------------------ start/stop

    async def start(self) -> None:
        """Take the node's objects into the view, start pre-installed plugins, open the socket."""
        assert self._node is not None, "bind() the node first"
        for pod in self._node.pods():
            self._pods[pod.id] = pod
            if pod.stopped_at:
                self._pods_stopped.add(pod.id)
        for ctr in self._node.containers():
            self._ctrs[ctr.id] = ctr
            if ctr.exited:
                self._ctrs_stopped.add(ctr.id)
        from crib.nri import launch

        found = launch.discover(self.cfg.plugin_path, self.cfg.plugin_config_path)
        if found:
            plugins = self._load()
            await asyncio.gather(*(launch.start(plugins, p) for p in found))
        if self.cfg.disable_connections:
            log.event(_log, 20, "NRI ready; external plugin connections disabled", launched=len(found))
            return
        if not _claim_socket(self.cfg.socket_path):
            return
        self._server = await asyncio.start_unix_server(self._accept, path=self.cfg.socket_path)
        os.chmod(self.cfg.socket_path, SOCKET_MODE)
        self._socket_inode = _inode(self.cfg.socket_path)
        log.event(_log, 20, "NRI ready", socket=self.cfg.socket_path, launched=len(found))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            if _inode(self.cfg.socket_path) == self._socket_inode:  # not one that replaced ours since
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.cfg.socket_path)
        if self._plugins is not None:
            await self._plugins.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._load().connect(reader, writer)

    def _load(self) -> Plugins:
        """The plugin half, loaded by the first plugin (see the module note)."""
        if self._plugins is None:
            from crib.nri.plugins import Plugins, Settings

            settings = Settings(registration_timeout=float(self.cfg.registration_timeout),
                                request_timeout=float(self.cfg.request_timeout), runtime_name="crib",
                                runtime_version=__version__, nri_version=NRI_VERSION)
            self._plugins = Plugins(settings, snapshot=self._snapshot, apply_updates=self._apply_updates)
        return self._plugins

    def _live(self) -> bool:
        if self._plugins is not None and self._plugins.attached:
            return True
        self._msgs.clear()
        return False

    def _background(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.event(_log, 30, "NRI event not delivered", event=what, error=str(t.exception()))

        task.add_done_callback(done)

    # ------------------------------------------------------------------------------------ messages

    def _snapshot(self) -> tuple[list[Any], list[Any]]:
        from crib.nri import convert

        return ([convert.pod(p) for p in self._pods.values()],
                [self._container_msg(c) for c in self._ctrs.values()])

    def _container_msg(self, rec: ContainerRecord) -> Any:
        from crib.nri import convert

        msg = self._msgs.get(rec.id)
        if msg is None:
            assert self._node is not None
            msg = self._msgs[rec.id] = convert.container(rec, self._node.spec(rec.id))
        return convert.refresh(msg, rec)

    def _pod_msg(self, sandbox_id: str) -> Any:
        from crib._proto.nri.v1alpha1 import api_pb2 as api
        from crib.nri import convert

        pod = self._pods.get(sandbox_id)
        return convert.pod(pod) if pod is not None else api.PodSandbox(id=sandbox_id)

    def _emit(self, event: int, build: Any, take: Any = None) -> Coroutine[Any, Any, None]:
        """Reserve event's places now; the returned coroutine delivers it (await it or background it)."""
        plugins = self._load()
        reserved = plugins.reserve(event)
        return plugins.chain(reserved, build, take or (lambda _p, _a: None))

    def _pod_event(self, event: int, rec: SandboxRecord) -> Coroutine[Any, Any, None]:
        from crib._proto.nri.v1alpha1 import api_pb2 as api
        from crib.nri import convert

        msg = convert.pod(rec)
        types: dict[int, Any] = {api.RUN_POD_SANDBOX: api.RunPodSandboxRequest,
                                 api.STOP_POD_SANDBOX: api.StopPodSandboxRequest,
                                 api.REMOVE_POD_SANDBOX: api.RemovePodSandboxRequest}
        request = types[event](pod=msg)
        return self._emit(event, lambda: request)

    def _ctr_event(self, event: int, rec: ContainerRecord, take: Any = None) -> Coroutine[Any, Any, None]:
        from crib._proto.nri.v1alpha1 import api_pb2 as api

        types: dict[int, Any] = {api.POST_CREATE_CONTAINER: api.PostCreateContainerRequest,
                 api.START_CONTAINER: api.StartContainerRequest,
                 api.POST_START_CONTAINER: api.PostStartContainerRequest,
                 api.POST_UPDATE_CONTAINER: api.PostUpdateContainerRequest,
                 api.STOP_CONTAINER: api.StopContainerRequest,
                 api.REMOVE_CONTAINER: api.RemoveContainerRequest}
        request = types[event](pod=self._pod_msg(rec.sandbox_id), container=self._container_msg(rec))
        return self._emit(event, lambda: request, take)

    # ------------------------------------------------------------------------------ lifecycle hooks

    async def pod(self, step: PodStep, rec: SandboxRecord) -> None:
        from_view = self._pods.get(rec.id)
        if step is PodStep.RUN:
            self._pods[rec.id] = rec
            if self._live():
                from crib._proto.nri.v1alpha1 import api_pb2 as api

                await self._pod_event(api.RUN_POD_SANDBOX, rec)
            return
        if from_view is None:
            return  # never announced (cut by a restart before its RunPodSandbox)
        stop = rec.id not in self._pods_stopped
        self._pods_stopped.add(rec.id)
        self._pods[rec.id] = rec
        if step is PodStep.REMOVE:
            del self._pods[rec.id]
            self._pods_stopped.discard(rec.id)
        elif not stop:
            return
        if not self._live():
            return
        from crib._proto.nri.v1alpha1 import api_pb2 as api

        pending = [self._pod_event(api.STOP_POD_SANDBOX, rec)] if stop else []
        if step is PodStep.REMOVE:
            pending.append(self._pod_event(api.REMOVE_POD_SANDBOX, rec))
        for coro in pending:
            await self._quietly(coro, step.value)

    async def adjust(self, rec: ContainerRecord, spec: dict[str, Any]) -> dict[str, Any]:
        self._ctrs[rec.id] = rec
        if not self._live():
            return spec
        from crib._proto.nri.v1alpha1 import api_pb2 as api
        from crib.nri import convert
        from crib.nri.adjust import Owners, SpecAdjuster, Updates
        from crib.nri.cdi import CdiRegistry

        msg = self._msgs[rec.id] = convert.container(rec, spec)
        pod = self._pod_msg(rec.sandbox_id)
        owners = Owners()
        adjuster = SpecAdjuster(rec.id, spec, owners, CdiRegistry(self.cfg.cdi_spec_dirs))
        updates = Updates(owners, creating=rec.id)

        def build() -> Any:
            convert.fill_from_spec(msg, adjuster.spec)
            return api.CreateContainerRequest(pod=pod, container=msg)

        def take(plugin: Plugin, answer: Any) -> None:
            if answer.HasField("adjust"):
                adjuster.apply(plugin.full_name, answer.adjust)
            updates.add(plugin.full_name, answer.update, answer.evict)

        await self._emit(api.CREATE_CONTAINER, build, take)
        spec = adjuster.finish()
        convert.fill_from_spec(msg, spec)
        await self._apply(updates, fail=True)
        return spec

    async def container(self, step: ContainerStep, rec: ContainerRecord) -> None:
        if rec.id not in self._ctrs:
            return
        self._ctrs[rec.id] = rec
        stop = step is ContainerStep.REMOVE and rec.id not in self._ctrs_stopped
        if step is ContainerStep.REMOVE:
            del self._ctrs[rec.id]
            self._ctrs_stopped.discard(rec.id)
        if not self._live():
            return
        from crib._proto.nri.v1alpha1 import api_pb2 as api

        if step is ContainerStep.START:
            await self._ctr_event(api.START_CONTAINER, rec)
        elif step is ContainerStep.REMOVE:
            pending = [self._ctr_event(api.STOP_CONTAINER, rec, self._take_stop_updates)] if stop else []
            pending.append(self._ctr_event(api.REMOVE_CONTAINER, rec))
            self._msgs.pop(rec.id, None)
            for coro in pending:
                await self._quietly(coro, step.value)
        elif step is ContainerStep.POST_START and rec.id in self._ctrs_stopped:
            return  # it exited before `runc start` returned: its StopContainer went out already
        else:
            event = {ContainerStep.POST_CREATE: api.POST_CREATE_CONTAINER,
                     ContainerStep.POST_START: api.POST_START_CONTAINER,
                     ContainerStep.POST_UPDATE: api.POST_UPDATE_CONTAINER}[step]
            self._background(self._ctr_event(event, rec), step.value)

    def exited(self, rec: ContainerRecord) -> None:
        if rec.id not in self._ctrs or rec.id in self._ctrs_stopped:
            return
        self._ctrs[rec.id] = rec
        self._ctrs_stopped.add(rec.id)
        if self._live():
            from crib._proto.nri.v1alpha1 import api_pb2 as api

            stop = self._ctr_event(api.STOP_CONTAINER, rec, self._take_stop_updates)
            self._background(stop, "StopContainer")

    async def update(self, rec: ContainerRecord, resources: dict[str, Any]) -> dict[str, Any]:
        if rec.id not in self._ctrs or not self._live():
            return resources
        import copy

        from crib._proto.nri.v1alpha1 import api_pb2 as api
        from crib.nri import convert
        from crib.nri.adjust import Owners, Updates

        self._ctrs[rec.id] = rec
        updates = Updates(Owners(), updating=rec.id)
        updates.resources[rec.id] = copy.deepcopy(resources)
        pod, msg = self._pod_msg(rec.sandbox_id), self._container_msg(rec)

        def build() -> Any:
            return api.UpdateContainerRequest(pod=pod, container=msg,
                                              linux_resources=convert.resources_to_nri(updates.resources[rec.id]))

        def take(plugin: Plugin, answer: Any) -> None:
            updates.add(plugin.full_name, answer.update, answer.evict)

        await self._emit(api.UPDATE_CONTAINER, build, take)
        await self._apply(updates, fail=True)
        return updates.resources[rec.id]

    # ------------------------------------------------------------------------------------ updates

    def _take_stop_updates(self, plugin: Plugin, answer: Any) -> None:
        if answer.update:
            from crib.nri.adjust import Owners, Updates

            updates = Updates(Owners())
            updates.add(plugin.full_name, answer.update)
            self._background(self._apply(updates, fail=False), "StopContainer updates")

    async def _apply_updates(self, plugin: str, updates: Updates) -> list[str]:
        return await self._apply(updates, fail=False)

    async def _apply(self, updates: Updates, *, fail: bool) -> list[str]:
        """Carry out updates to other containers and evictions; the ids whose update failed.

        Raises:
            PluginError: fail is set and an update not marked ignore_failure failed.
        """
        assert self._node is not None
        failed: list[str] = []
        for cid, resources in updates.others().items():
            try:
                await self._node.update(cid, resources)
            except CribError as exc:
                failed.append(cid)
                log.event(_log, 30, "NRI container update failed", container=cid, error=str(exc))
                if fail and not updates.ignore_failure.get(cid, False):
                    raise PluginError(f"an NRI plugin's update of container {cid[:12]} failed: "
                                      f"{exc}") from exc
        for cid, reason in updates.evictions.items():
            try:
                await self._node.evict(cid, reason)
            except CribError as exc:
                log.event(_log, 30, "NRI eviction failed", container=cid, error=str(exc))
        return failed

    @staticmethod
    async def _quietly(coro: Coroutine[Any, Any, None], what: str) -> None:
        """Deliver an event whose failure must not fail the step (stop, remove): log it instead."""
        try:
            await coro
        except PluginError as exc:
            log.event(_log, 30, "NRI plugin failed an event", event=what, error=str(exc))


def _claim_socket(path: str) -> bool:
    """Make room for the NRI socket, as containerd and CRI-O do: the runtime started last takes it.

    Their NRI adaptation removes whatever socket is at the path and listens anew, so of two runtimes on one
    node configured with the same socket the later one gets the plugins that connect from then on; the other
    keeps its connected plugins. crib does the same, and says so in its log when the socket it replaces was
    live. (close() then removes the socket only while it is still crib's, so the runtime that took it over
    keeps it.) A path that is not a socket is left alone: False (logged), no external plugins.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not os.path.lexists(path):
        return True
    if not Path(path).is_socket():
        log.event(_log, 30, "NRI socket path exists and is not a socket; no external plugins (remove it or "
                  "set nri.socket_path)", socket=path)
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            pass
        else:
            log.event(_log, 30, "NRI socket was in use by another process; taking it over as containerd and "
                      "CRI-O do (plugins connecting from now on reach this daemon; give each runtime its own "
                      "nri.socket_path to keep both)", socket=path)
    os.unlink(path)
    return True


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


__all__ = ["NRI_VERSION", "NodeAccess", "NriRuntime"]
