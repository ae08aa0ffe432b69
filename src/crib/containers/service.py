"""Containers: the RuntimeService's container calls, in crib's terms.

Like pods, creation runs in a task shielded from the RPC, so kubelet's retry after a deadline finds the
container being (or already) created instead of an error. Start, stop and remove take the container's
lock. Exits come from conmon's exit files (runtime/exits.py) through on_exit(), which also wakes stops.
Each live container's conmon is watched too: one that ends without an exit file is reconciled from runc's
state (containers/lost.py), so neither status nor a stop waits for a file that will never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import time
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from crib import ids, log, oci
from crib.containers import create as create_mod
from crib.containers import exec as exec_mod
from crib.containers import idmapped, imagevols, lost, usage
from crib.containers.deps import ContainerDeps
from crib.containers.events import ContainerEvent, EventKind
from crib.containers.stop import terminate
from crib.errors import CribError, ExternalCommandError, FailedPrecondition, InvalidArgument, NotFound
from crib.hooks import ContainerStep
from crib.metrics import ContainerReading, PodReading
from crib.rootfs import overlay
from crib.rootfs.overlay import Rootfs
from crib.runtime import conmon, exits
from crib.runtime.exits import Exit
from crib.runtime.runc import RUNC_TIMEOUT, ExecResult, InteractiveExec, sweep_execs
from crib.state.pending import PendingNames
from crib.state.records import ContainerRecord, Phase, SandboxRecord
from crib.system.cgstats import CgroupStats

_log = log.get(__name__)
T = TypeVar("T")
EXIT_RETRY = 1.0


class ContainerService:
    """Create, start, stop, remove, status, list, exec, stats of containers (see the module note)."""

    def __init__(self, deps: ContainerDeps) -> None:
        self.deps = deps
        self._pending = PendingNames(self._id_by_name)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._exited: dict[str, asyncio.Event] = {}
        self._creating: dict[str, set[asyncio.Task[Any]]] = {}  # sandbox id -> creations in flight
        # Containers between `runc start` and their STARTED event: an exit recorded meanwhile (a command
        # that exits at once) publishes its STOPPED event after STARTED, never before.
        self._starting: dict[str, list[ContainerRecord]] = {}
        self._monitors = lost.Monitors(deps, on_exit=self.on_exit, record_exit=self._record_exit)
        self._unrecorded: set[str] = set()  # exits seen but not yet written (see _record_exit)

    def _id_by_name(self, name: str) -> str | None:
        rec = self.deps.store.container_by_name(name)
        return rec.id if rec is not None else None

    def _background(self, coro: Coroutine[Any, Any, T], sandbox_id: str) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        self._creating.setdefault(sandbox_id, set()).add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            self._creating.get(sandbox_id, set()).discard(t)

        task.add_done_callback(done)
        return task

    def _publish(self, kind: EventKind, rec: ContainerRecord) -> None:
        sandbox = self.deps.store.sandboxes.get(rec.sandbox_id)
        self.deps.events.publish(ContainerEvent(
            kind=kind, at_ns=time.time_ns(), container=rec, sandbox=sandbox,
            pod_containers=tuple(self.deps.store.containers_of(rec.sandbox_id))))

    # ------------------------------------------------------------------------------------------ create

    async def create(self, sandbox_id: str, config: Any, sandbox_config: Any) -> str:
        """CreateContainer: the new container's id, or that of the one already created under the name."""
        sandbox = self.deps.sandboxes.ready(sandbox_id)
        name = create_mod.reserved_name(config, sandbox.id)
        return await asyncio.shield(self._background(self._create(name, sandbox.id, config, sandbox_config),
                                                     sandbox.id))

    async def _create(self, name: str, sandbox_id: str, config: Any, sandbox_config: Any) -> str:
        async with self._pending.claim(name) as claim:
            if claim.existing:
                return claim.existing
            sandbox = self.deps.sandboxes.ready(sandbox_id)
            try:
                image = self.deps.images.resolve(config.image.image)
            except NotFound as exc:
                raise NotFound(f"container {config.metadata.name!r}: image {config.image.image} is not "
                               f"present on the node; pull it first ({exc})") from exc
            volumes = imagevols.resolve(self.deps.images, config)
            cid = ids.new_id()
            rec = create_mod.initial_record(cid, name, sandbox, config, image, volumes)
            async with self.deps.locks.hold(cid):
                rec = await create_mod.create(self.deps, rec, sandbox, config, sandbox_config, image, volumes)
            log.event(_log, 20, "container created", container=cid, name=name, pid=rec.pid)
            await self._monitors.track(rec)
            await self.deps.hooks.container(ContainerStep.POST_CREATE, rec)
            self._publish(EventKind.CREATED, rec)
            claim.done(cid)
            return cid

    # ------------------------------------------------------------------------------- start/stop/remove

    async def start(self, container_id: str) -> None:
        """StartContainer, run in a task shielded from the RPC (as creation is).

        Once `runc start` may have run, the container may be running, and only this call records that: a
        caller whose deadline ends half-way (kubelet's is 2 minutes; a slow runc, NRI plugin or disk can
        take that long) must not cancel the record-keeping with it, or crib would say CREATED for a
        running container and kubelet's retry would be refused by runc. The retry instead waits for the
        start in flight (the container's lock) and is told the truth.
        """
        cid = self._resolve(container_id)
        task = asyncio.ensure_future(self._start(cid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def _start(self, cid: str) -> None:
        async with self.deps.locks.hold(cid):
            rec = self.get(cid)
            if rec.phase is not Phase.CREATED or rec.started_at or rec.exited:
                state = "running" if rec.running else "exited" if rec.exited else rec.phase.value
                raise FailedPrecondition(f"container {rec.meta_name} ({cid[:12]}) is {state}; only a "
                                         "created container can be started")
            await self.deps.hooks.container(ContainerStep.START, rec)
            at = time.time_ns()
            self._starting[cid] = []
            try:
                runc = self.deps.runcs[rec.runtime_handler]
                try:
                    # A container joining its pod's sandbox (gVisor) is started by its shim (it holds the
                    # stdio).
                    if not await conmon.shim_start(self.deps.layout.bundle(cid), timeout=RUNC_TIMEOUT):
                        await runc.start(cid)
                except ExternalCommandError as exc:
                    if not await lost.started_unrecorded(self.deps, rec):
                        raise lost.refused(self.deps, rec, exc, "StartContainer") from exc
                rec = self.deps.store.put_container(dataclasses.replace(self.get(cid), started_at=at))
                self._publish(EventKind.STARTED, rec)
                await self.deps.hooks.container(ContainerStep.POST_START, rec)
            finally:
                if self._starting.pop(cid, None):  # it exited meanwhile: its record has both times now
                    stopped = self.get(cid)
                    self.deps.hooks.exited(stopped)
                    self._publish(EventKind.STOPPED, stopped)

    async def stop(self, container_id: str, timeout: float) -> None:
        """StopContainer; succeeds for a container already stopped or unknown, as CRI requires."""
        cid = self.resolve(container_id, missing_ok=True)
        if cid is None:
            return
        async with self.deps.locks.hold(cid):
            rec = self.deps.store.containers.get(cid)
            if rec is None or rec.exited or rec.phase is not Phase.CREATED:
                return
            await terminate(self.deps, rec, max(timeout, 0.0), self._wait_exit)

    async def remove(self, container_id: str) -> None:
        """RemoveContainer (killing it if it runs); succeeds for a container already removed."""
        cid = self.resolve(container_id, missing_ok=True)
        if cid is None:
            return
        async with self.deps.locks.hold(cid):
            rec = self.deps.store.containers.get(cid)
            if rec is None:
                return
            rec = self.deps.store.put_container(dataclasses.replace(rec, phase=Phase.REMOVING))
            if not rec.exited:
                with contextlib.suppress(Exception):
                    await terminate(self.deps, rec, 0.0, self._wait_exit)
            await self._purge(rec)
            await self.deps.hooks.container(ContainerStep.REMOVE, rec)
        self._exited.pop(cid, None)
        self._publish(EventKind.DELETED, rec)

    async def _purge(self, rec: ContainerRecord) -> None:
        """Remove runc state, conmon leftovers, the rootfs and the row (idempotent)."""
        lay = self.deps.layout
        bundle = lay.bundle(rec.id)
        self._monitors.forget(rec.id)
        await create_mod.delete_runtime(self.deps, rec.id, self.deps.runcs[rec.runtime_handler], bundle,
                                        rec.cgroup_path or self._cgroup_of(rec))
        fs = Rootfs(data=lay.container_data(rec.id), target=bundle / "rootfs")
        await asyncio.to_thread(imagevols.unmount_all, bundle)
        await asyncio.to_thread(idmapped.unmount_all, bundle)
        await asyncio.to_thread(overlay.remove, fs)
        await asyncio.to_thread(shutil.rmtree, bundle, True)
        self.deps.store.delete_container(rec.id)

    def _cgroup_of(self, rec: ContainerRecord) -> str:
        """The cgroup a container cut before CREATED (no cgroup_path recorded yet) was given."""
        sandbox = self.deps.store.sandboxes.get(rec.sandbox_id)
        return oci.cgroups_path(sandbox.cgroup_parent, rec.id) if sandbox and sandbox.cgroup_parent else ""

    async def stop_all(self, sandbox_id: str, grace: float) -> None:
        recs = [c for c in self.deps.store.containers_of(sandbox_id) if not c.exited]
        await asyncio.gather(*(self.stop(c.id, grace) for c in recs))

    async def remove_all(self, sandbox_id: str) -> None:
        pending = self._creating.get(sandbox_id, set())
        if pending:  # they see the pod is no longer ready at their end and undo themselves
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(self.remove(c.id) for c in self.deps.store.containers_of(sandbox_id)))

    # ---------------------------------------------------------------------------------------- exits

    def on_exit(self, found: Exit) -> None:
        """Record an exit from conmon's exit file (idempotent: later reports of the same exit are ignored)."""
        rec = self.deps.store.containers.get(found.cid)
        if rec is None or rec.finished_at or rec.phase is Phase.CREATING:
            return
        oom = (self.deps.layout.bundle(rec.id) / "oom").exists()
        reason = "OOMKilled" if oom else "Completed" if found.code == 0 else "Error"
        message = "the container exceeded its memory limit and was killed by the kernel" if oom else ""
        self._record_exit(dataclasses.replace(
            rec, finished_at=found.at_ns, exit_code=found.code, reason=reason, message=message))

    def _record_exit(self, rec: ContainerRecord) -> None:
        """Persist an exit, then wake stops, stop watching and tell subscribers.

        An exit that cannot be written (the state database's disk is full) is not dropped: nothing would
        report it again, and the container would show running forever. It is looked for again every
        EXIT_RETRY seconds (the exit file, or runc) until it is recorded.
        """
        try:
            rec = self.deps.store.put_container(rec)
        except CribError as exc:
            if rec.id not in self._unrecorded:
                log.event(_log, 40, "cannot record a container's exit yet; retrying", container=rec.id,
                          error=str(exc))
            self._unrecorded.add(rec.id)
            asyncio.get_running_loop().call_later(EXIT_RETRY, self._monitors.gone, rec.id)
            return
        self._unrecorded.discard(rec.id)
        self._monitors.forget(rec.id)
        self._exited.setdefault(rec.id, asyncio.Event()).set()
        log.event(_log, 20 if rec.reason != lost.UNKNOWN_REASON else 30, "container exited",
                  container=rec.id, code=rec.exit_code, reason=rec.reason)
        if rec.id in self._starting:
            self._starting[rec.id].append(rec)
        else:
            self.deps.hooks.exited(rec)
            self._publish(EventKind.STOPPED, rec)

    async def _wait_exit(self, cid: str, timeout: float) -> bool:
        """Whether the container's exit is recorded within timeout (the exit file is checked too)."""
        rec = self.deps.store.containers.get(cid)
        if rec is None or rec.exited:
            return True
        event = self._exited.setdefault(cid, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        # Not only the watch's word: a lost exit file or monitor is looked for directly, so a stop always
        # ends with the truth (the watch may have failed to open, or the event may have been missed).
        await self._monitors.reconcile(cid)
        rec = self.deps.store.containers.get(cid)
        return rec is None or rec.exited

    # ------------------------------------------------------------------------------------- read side

    def _resolve(self, container_id: str) -> str:
        found = self.resolve(container_id)
        assert found is not None
        return found

    def resolve(self, container_id: str, *, missing_ok: bool = False) -> str | None:
        """A full id from a full id or a unique prefix."""
        if not container_id:
            raise InvalidArgument("container_id is empty")
        store = self.deps.store.containers
        if container_id in store:
            return container_id
        matches = [cid for cid in store if cid.startswith(container_id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"container id prefix {container_id!r} is ambiguous")
        if missing_ok:
            return None
        raise NotFound(f"container {container_id} not found")

    def get(self, container_id: str) -> ContainerRecord:
        """A container's record; one still being created is not found (CRI: invisible until created)."""
        cid = self.resolve(container_id)
        assert cid is not None
        rec = self.deps.store.containers[cid]
        if rec.phase is Phase.CREATING:
            raise NotFound(f"container {cid} not found (it is still being created)")
        return rec

    def find(self, *, id_prefix: str = "", sandbox_prefix: str = "", state: str = "",
             labels: Mapping[str, str] | None = None) -> list[ContainerRecord]:
        """Containers matching every filter; state is "created", "running" or "exited" ("" = any)."""
        out = []
        for rec in self.deps.store.containers.values():
            if rec.phase is Phase.CREATING:
                continue
            if id_prefix and not rec.id.startswith(id_prefix):
                continue
            if sandbox_prefix and not rec.sandbox_id.startswith(sandbox_prefix):
                continue
            if state and state_of(rec) != state:
                continue
            if labels and any(rec.labels.get(k) != v for k, v in labels.items()):
                continue
            out.append(rec)
        return sorted(out, key=lambda r: r.created_at)

    def containers_using(self, image_id: str) -> list[str]:
        """Ids of the containers created from an image or mounting it as an image volume (RemoveImage and
        prune refuse images in use)."""
        return [c.id for c in self.deps.store.containers.values()
                if c.image_id == image_id or any(m.image_id == image_id for m in c.mounts)]

    # ------------------------------------------------------------------------------ exec, stats, logs

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> ExecResult:
        return await exec_mod.exec_sync(self.deps, self.get(container_id), cmd, timeout)

    async def exec_attached(self, container_id: str, cmd: list[str], *, tty: bool, stdin: bool, stdout: bool,
                            stderr: bool) -> InteractiveExec:
        """Start cmd for an exec streaming session (see exec.exec_attached)."""
        return await exec_mod.exec_attached(self.deps, self.get(container_id), cmd, tty=tty, stdin=stdin,
                                            stdout=stdout, stderr=stderr)

    def attach(self, container_id: str) -> conmon.Attachment:
        """Connect to a running container's stdio (see exec.attach)."""
        return exec_mod.attach(self.deps, self.get(container_id))

    def running(self, container_id: str, what: str) -> ContainerRecord:
        """The record of a running container, for calls that need one (Exec, Attach).

        Raises:
            NotFound: no such container.
            FailedPrecondition: it is not running.
        """
        rec = self.get(container_id)
        exec_mod.require_running(rec, what)
        return rec

    async def update_resources(self, container_id: str, resources: Any) -> None:
        cid = self._resolve(container_id)
        async with self.deps.locks.hold(cid):
            await exec_mod.update_resources(self.deps, self.get(cid), resources)

    async def update_linux(self, container_id: str, linux: dict[str, Any]) -> None:
        """Set OCI linux.resources fields on a running container (updates node plugins ask for)."""
        cid = self._resolve(container_id)
        async with self.deps.locks.hold(cid):
            await exec_mod.apply_linux_resources(self.deps, self.get(cid), linux)

    async def reopen_log(self, container_id: str) -> None:
        await exec_mod.reopen_log(self.deps, self.get(container_id))

    async def stats(self, recs: list[ContainerRecord]) -> list[ContainerReading]:
        readings = await usage.container_stats(self.deps.sampler, recs)
        return usage.with_runtime(readings, await self._runtime_stats(recs))

    async def pod_stats(self, sandboxes: list[SandboxRecord]) -> list[PodReading]:
        return await self._with_runtime(await usage.pod_stats(self.deps.sampler, self.deps.store, sandboxes))

    async def metric_readings(self) -> list[PodReading]:
        """Readings for ListPodSandboxMetrics and the Prometheus scrape (ready pods, live containers)."""
        return await self._with_runtime(await usage.metric_readings(self.deps.sampler, self.deps.store))

    async def _with_runtime(self, pods: list[PodReading]) -> list[PodReading]:
        runtime = await self._runtime_stats([c.container for pod in pods for c in pod.containers])
        if not runtime:
            return pods
        return [dataclasses.replace(pod, containers=tuple(usage.with_runtime(list(pod.containers), runtime)))
                for pod in pods]

    async def _runtime_stats(self, recs: list[ContainerRecord]) -> dict[str, CgroupStats]:
        """Counters of the running containers of sandboxed handlers, from the runtime (`events --stats`):
        they run in the sandbox's kernel, not in host cgroups of their own. A container the runtime cannot
        report on keeps its host reading (not an error)."""
        wanted = [r for r in recs if r.running and self.deps.runcs[r.runtime_handler].sandboxed]

        async def one(rec: ContainerRecord) -> tuple[str, CgroupStats | None]:
            try:
                return rec.id, usage.runtime_stats(await self.deps.runcs[rec.runtime_handler].stats(rec.id))
            except Exception as exc:
                log.event(_log, 10, "runtime stats unavailable", container=rec.id, error=str(exc)[:200])
                return rec.id, None

        found = await asyncio.gather(*(one(r) for r in wanted))
        return {cid: stats for cid, stats in found if stats is not None}

    # ----------------------------------------------------------------------------------------- restore

    async def restore(self) -> None:
        """After a restart: undo creations, finish removals, record exits that happened while down."""
        lay = self.deps.layout
        for rec in list(self.deps.store.containers.values()):
            try:
                if rec.phase in (Phase.CREATING, Phase.REMOVING):
                    log.event(_log, 30, "cleaning up container cut by a restart", container=rec.id,
                              phase=rec.phase.value)
                    await self._purge(rec)
                    continue
                if rec.exited:
                    continue
                if killed := sweep_execs(lay.bundle(rec.id), rec.pid):
                    log.event(_log, 30, "killed exec'd commands whose session ended with the last daemon",
                              container=rec.id, commands=killed)
                found = exits.read_exit(lay.exits, rec.id)
                if found is not None:
                    self.on_exit(found)
                else:
                    await self._monitors.track(rec)
            except Exception:
                _log.exception("restoring container %s failed; it is left as found", rec.id)

    async def close(self) -> None:
        await self._monitors.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 10.0)


def state_of(rec: ContainerRecord) -> str:
    if rec.exited:
        return "exited"
    if rec.running:
        return "running"
    return "created"


__all__ = ["ContainerService", "state_of"]
