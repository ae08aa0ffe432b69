"""A container whose monitor died: what is true on the host, learnt from runc.

conmon is the only writer of a container's exit file. When it is killed (kill -9, the OOM killer) the file
never comes, and waiting for it would report the container running forever and make every stop wait out
its bound. So the service watches each conmon (system/pidwatch.py) and, when one ends without an exit file,
asks runc:

    runc says stopped, or no longer knows the container  ->  exited, exit code unknown (255, reason
                                                              "Unknown", as containerd reports it)
    runc says created / running / paused                 ->  the container outlived its monitor: its own
                                                              pid is watched instead, and when it ends the
                                                              same question is asked again

A process that outlived its monitor has no one collecting its output (writes to a closed pipe kill it
with SIGPIPE, which is how most such containers end) and no one to learn its exit status.

runc's own state of a container can be lost too (its state.json missing or cut by a crash or a full
disk): then runc refuses every command on the container. refused() turns that into an answer that says
so and what to do; stopping goes through the container's cgroup instead (stop.send), and removal drops
runc's unusable state (Runc.delete).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from crib import log
from crib.containers.deps import ContainerDeps
from crib.errors import CribError, ExternalCommandError, FailedPrecondition, NotFound
from crib.runtime import conmon, exits
from crib.runtime.exits import Exit
from crib.state.records import ContainerRecord, Phase
from crib.system.pidwatch import ProcessWatch

_log = log.get(__name__)

UNKNOWN_EXIT_CODE = 255
UNKNOWN_REASON = "Unknown"
STOPPED = "stopped"


async def runtime_status(deps: ContainerDeps, rec: ContainerRecord) -> tuple[str, int]:
    """runc's status of the container and its pid; ("stopped", 0) when runc no longer knows it.

    Raises:
        ExternalCommandError: runc itself failed (its answer is unknown; the caller retries later).
    """
    try:
        state = await deps.runcs[rec.runtime_handler].state(rec.id)
    except NotFound:
        return STOPPED, 0
    return str(state.get("status", STOPPED)), int(state.get("pid") or 0)


def unknown_exit(rec: ContainerRecord) -> ContainerRecord:
    """The record of a container that ended while nobody could see its exit status."""
    return dataclasses.replace(
        rec, finished_at=time.time_ns(), exit_code=UNKNOWN_EXIT_CODE, reason=UNKNOWN_REASON,
        message="the container's monitor (conmon) ended before the container did, so its exit status "
                "is unknown; runc reports the container stopped")


async def started_unrecorded(deps: ContainerDeps, rec: ContainerRecord) -> bool:
    """Whether a refused `runc start` is a retry of a start that happened but was never recorded (the state
    database's disk was full): runc then says running, and the record is what is behind."""
    try:
        status, _ = await runtime_status(deps, rec)
    except CribError:
        return False
    if status not in ("running", "paused"):
        return False
    log.event(_log, 30, "container was started but its record was not written; recording it now",
              container=rec.id)
    return True


def refused(deps: ContainerDeps, rec: ContainerRecord, exc: ExternalCommandError, doing: str) -> CribError:
    """The error to answer when the runtime failed `doing` on a container: its own, unless the runtime
    cannot load its state of the container, which no retry mends (then FailedPrecondition saying what to do).
    """
    damage = deps.runcs[rec.runtime_handler].damaged_state(rec.id)
    if not damage:
        return exc
    return FailedPrecondition(
        f"{doing} container {rec.meta_name} ({rec.id[:12]}): {damage}, so the runtime cannot act on the "
        "container (a crash or a full disk can leave it so); remove the container (its processes are stopped "
        "through its cgroup) and create it again")


class Monitors:
    """The watch on every live container's conmon (or on the container, once conmon is gone); see the
    module note. on_exit records an exit from its file, record_exit persists a finished record."""

    def __init__(self, deps: ContainerDeps, *, on_exit: Callable[[Exit], None],
                 record_exit: Callable[[ContainerRecord], None]) -> None:
        self.deps = deps
        self._on_exit = on_exit
        self._record_exit = record_exit
        self._watch = ProcessWatch(self.gone)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def track(self, rec: ContainerRecord) -> None:
        """Watch the conmon of a live container; reconcile at once if it is already gone."""
        bundle = self.deps.layout.bundle(rec.id)
        pid = conmon.read_pid(bundle / conmon.CONMON_PIDFILE)
        watched = pid > 0 and self._watch.watch(rec.id, pid)
        if not watched or not conmon.monitor_alive(bundle, rec.id):  # gone, or its pid already reused
            self._watch.forget(rec.id)
            await self.reconcile(rec.id)

    def gone(self, cid: str) -> None:
        """A watched process ended (or an exit is to be looked for again): reconcile in the background."""
        task = asyncio.ensure_future(self.reconcile(cid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, cid: str) -> None:
        self._watch.forget(cid)

    async def reconcile(self, cid: str) -> None:
        """Record a live container's exit from its exit file or runc, if it has ended (idempotent)."""
        rec = self.deps.store.containers.get(cid)
        if rec is None or rec.exited or rec.phase is not Phase.CREATED:
            return
        found = exits.read_exit(self.deps.layout.exits, cid)
        if found is not None:
            self._on_exit(found)
            return
        if conmon.monitor_alive(self.deps.layout.bundle(cid), cid):
            return  # a report from a watch that was replaced meanwhile; conmon will write the file
        try:
            status, pid = await runtime_status(self.deps, rec)
        except CribError as exc:
            log.event(_log, 40, "container's monitor is gone and runc cannot tell its state; asked again at "
                      "the next stop or restart", container=cid, error=str(exc))
            return
        rec = self.deps.store.containers.get(cid)
        if rec is None or rec.exited or rec.phase is not Phase.CREATED:
            return
        found = exits.read_exit(self.deps.layout.exits, cid)  # conmon may have written it after all
        if found is not None:
            self._on_exit(found)
        elif status == STOPPED:
            self._record_exit(unknown_exit(rec))
        elif pid > 0 and not self._watch.watching(cid):
            log.event(_log, 30, "container outlives its monitor (conmon): its output is no longer logged "
                      "and its exit status will be unknown", container=cid, pid=pid, state=status)
            if not self._watch.watch(cid, pid):
                await self.reconcile(cid)  # it ended in between: runc now says stopped

    async def close(self) -> None:
        self._watch.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["STOPPED", "UNKNOWN_EXIT_CODE", "UNKNOWN_REASON", "Monitors", "refused", "runtime_status",
           "started_unrecorded", "unknown_exit"]
