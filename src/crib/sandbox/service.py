"""Pod sandboxes: the RuntimeService's pod calls, in crib's terms.

Creation runs in a task of its own, shielded from the RPC: when kubelet's deadline passes, the work goes
on, and kubelet's retry (same name) waits for it through PendingNames and answers with its id. Stop and
remove take the pod's lock; status and list answer from memory and never wait on a slow pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from crib import ids, log
from crib.errors import FailedPrecondition, InvalidArgument, NotFound
from crib.network.dial import PodDialer
from crib.sandbox import create as create_mod
from crib.sandbox import policy, resources, teardown
from crib.sandbox.deps import SandboxDeps
from crib.state.pending import PendingNames
from crib.state.records import Phase, SandboxRecord
from crib.system import ns

_log = log.get(__name__)
T = TypeVar("T")


class SandboxService:
    """RunPodSandbox, StopPodSandbox, RemovePodSandbox, status and list (see the module note)."""

    def __init__(self, deps: SandboxDeps) -> None:
        self.deps = deps
        self._pending = PendingNames(self._id_by_name)
        self._tasks: set[asyncio.Task[Any]] = set()

    def _id_by_name(self, name: str) -> str | None:
        rec = self.deps.store.sandbox_by_name(name)
        return rec.id if rec is not None else None

    def _background(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------------------------------- run

    def handler(self, requested: str) -> str:
        """The runtime handler for a request ("" = the default); InvalidArgument lists the known ones."""
        name = requested or self.deps.cfg.runtime.default_handler
        if name not in self.deps.runcs:
            known = ", ".join(sorted(self.deps.runcs))
            raise InvalidArgument(f"runtime handler {name!r} is not configured; known handlers: {known} "
                                  "(add a [runtime.handlers.<name>] table to the crib config)")
        return name

    async def run(self, config: Any, runtime_handler: str) -> str:
        """RunPodSandbox: the id of the new pod, or of the pod already created under the same name."""
        handler = self.handler(runtime_handler)
        meta = config.metadata
        name = policy.reserved_name(meta.name, meta.namespace, meta.uid, meta.attempt)
        return await asyncio.shield(self._background(self._run(name, config, handler)))

    async def _run(self, name: str, config: Any, handler: str) -> str:
        async with self._pending.claim(name) as claim:
            if claim.existing:
                return claim.existing
            sid = ids.new_id()
            rec = create_mod.initial_record(self.deps, sid, config, handler)
            async with self.deps.locks.hold(sid):
                rec = await create_mod.create(self.deps, rec, config)
            log.event(_log, 20, "pod sandbox ready", pod=sid, name=name, ips=list(rec.ips) or None)
            claim.done(sid)
            return sid

    # ------------------------------------------------------------------------------------ stop/remove

    async def stop(self, sandbox_id: str) -> None:
        """StopPodSandbox; succeeds for a pod already stopped or unknown, as CRI requires."""
        sid = self.resolve(sandbox_id, missing_ok=True)
        if sid is None:
            return
        async with self.deps.locks.hold(sid):
            rec = self.deps.store.sandboxes.get(sid)
            if rec is None or rec.phase is not Phase.CREATED:
                return
            await teardown.stop(self.deps, rec)

    async def remove(self, sandbox_id: str) -> None:
        """RemovePodSandbox; succeeds for a pod already removed."""
        sid = self.resolve(sandbox_id, missing_ok=True)
        if sid is None:
            return
        async with self.deps.locks.hold(sid):
            rec = self.deps.store.sandboxes.get(sid)
            if rec is None:
                return
            await teardown.remove(self.deps, rec)
        log.event(_log, 20, "pod sandbox removed", pod=sid)

    async def update_resources(self, sandbox_id: str, new: Any, overhead: Any) -> SandboxRecord:
        """UpdatePodSandboxResources (in-place pod resize): see sandbox/resources.py."""
        sid = self.resolve(sandbox_id)
        assert sid is not None
        async with self.deps.locks.hold(sid):
            rec = await resources.update(self.deps, self.deps.store.sandboxes[sid], new, overhead)
        log.event(_log, 20, "pod resources updated", pod=sid, applied=resources.owns_cgroup(rec))
        return rec

    def on_infra_exit(self, sandbox_id: str) -> None:
        """The PID-namespace holder died: the pod can no longer start processes in it."""
        rec = self.deps.store.sandboxes.get(sandbox_id)
        if rec is not None and rec.phase is Phase.CREATED and rec.stopped_at == 0:
            self.deps.store.put_sandbox(dataclasses.replace(rec, stopped_at=time.time_ns()))
            log.event(_log, 30, "pod PID-namespace holder exited; pod is NOTREADY", pod=sandbox_id)

    # ------------------------------------------------------------------------------------- read side

    def resolve(self, sandbox_id: str, *, missing_ok: bool = False) -> str | None:
        """A full id from a full id or a unique prefix (crictl shortens ids)."""
        if not sandbox_id:
            raise InvalidArgument("pod_sandbox_id is empty")
        store = self.deps.store.sandboxes
        if sandbox_id in store:
            return sandbox_id
        matches = [sid for sid in store if sid.startswith(sandbox_id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"pod sandbox id prefix {sandbox_id!r} is ambiguous ({len(matches)} pods)")
        if missing_ok:
            return None
        raise NotFound(f"pod sandbox {sandbox_id} not found")

    def get(self, sandbox_id: str) -> SandboxRecord:
        sid = self.resolve(sandbox_id)
        assert sid is not None
        return self.deps.store.sandboxes[sid]

    def ready(self, sandbox_id: str) -> SandboxRecord:
        """The record of a READY pod; FailedPrecondition otherwise (containers are created in ready pods)."""
        rec = self.get(sandbox_id)
        if not rec.ready:
            state = "being created" if rec.phase is Phase.CREATING else "stopped or being removed"
            raise FailedPrecondition(f"pod sandbox {rec.id} is {state}; containers can only be created in a "
                                     "ready pod")
        return rec

    def forwardable(self, sandbox_id: str) -> SandboxRecord:
        """The record of a pod whose ports can be forwarded to (PortForward).

        Raises:
            NotFound: no such pod.
            FailedPrecondition: the pod is not ready.
        """
        rec = self.get(sandbox_id)
        if not rec.ready:
            raise FailedPrecondition(f"pod sandbox {rec.id[:12]} ({rec.meta.name}) is not ready; port "
                                     "forwarding needs a running pod")
        return rec

    def dialer(self, sandbox_id: str) -> PodDialer:
        """Connections to the pod's own ports, from inside its network namespace (port forwarding)."""
        rec = self.forwardable(sandbox_id)

        def check() -> None:
            self.forwardable(rec.id)

        return PodDialer(rec.netns_path if rec.network_mode != "node" else "", check)

    def find(self, *, id_prefix: str = "", ready: bool | None = None,
             labels: Mapping[str, str] | None = None) -> list[SandboxRecord]:
        """Pods matching every given filter (pods still being created are not listed)."""
        out = []
        for rec in self.deps.store.sandboxes.values():
            if rec.phase is Phase.CREATING:
                continue
            if id_prefix and not rec.id.startswith(id_prefix):
                continue
            if ready is not None and rec.ready != ready:
                continue
            if labels and any(rec.labels.get(k) != v for k, v in labels.items()):
                continue
            out.append(rec)
        return sorted(out, key=lambda r: r.created_at)

    # ----------------------------------------------------------------------------------------- restore

    async def restore(self) -> None:
        """After a restart: undo pods cut half-way, finish removals, notice pods whose pins vanished."""
        for rec in list(self.deps.store.sandboxes.values()):
            try:
                if rec.phase is Phase.CREATING:
                    log.event(_log, 30, "undoing pod creation cut by a restart", pod=rec.id)
                    await self._undo_cut_creation(rec)
                elif rec.phase is Phase.REMOVING:
                    log.event(_log, 30, "finishing pod removal cut by a restart", pod=rec.id)
                    await teardown.remove(self.deps, rec)
                elif rec.ready and _pins_lost(rec):
                    await teardown.stop(self.deps, rec)
            except Exception:
                _log.exception("restoring pod %s failed; it is left as found", rec.id)

    async def _undo_cut_creation(self, rec: SandboxRecord) -> None:
        """Purge a pod a crash left CREATING; if that fails (a CNI DEL that fails), keep it NOTREADY.

        A CREATING pod is hidden from ListPodSandbox, so a pod whose undo failed would otherwise hold its
        namespaces, cgroups and network until some later restart, with nobody able to see or remove it.
        Surfaced as a stopped pod, kubelet (or crictl rmp) removes it, and RemovePodSandbox retries the
        very steps that failed here.
        """
        try:
            await teardown.purge(self.deps, rec)
        except Exception as exc:
            current = self.deps.store.sandboxes.get(rec.id, rec)
            self.deps.store.put_sandbox(dataclasses.replace(current, phase=Phase.CREATED,
                                                            stopped_at=time.time_ns()))
            log.event(_log, 40, "pod creation cut by a restart could not be undone; pod kept NOTREADY for "
                      "RemovePodSandbox, which retries", pod=rec.id, error=str(exc))

    async def close(self) -> None:
        """Wait briefly for creations in flight (their undo runs if they are cancelled)."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 10.0)


def _pins_lost(rec: SandboxRecord) -> bool:
    paths: Iterable[str] = (p for p in (rec.netns_path, rec.ipcns_path, rec.utsns_path, rec.userns_path) if p)
    return any(not ns.is_pinned(p) for p in paths)


__all__ = ["SandboxService"]
