"""Stopping a container: its stop signal, a grace period, then SIGKILL to every process it has.

The exit itself is learnt from conmon's exit file (runtime/exits.py), which the service turns into the
record's finished_at; this module waits for that, bounded at each stage.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from crib import log
from crib.containers.deps import ContainerDeps
from crib.errors import DeadlineExceeded, ExternalCommandError
from crib.runtime import conmon
from crib.state.records import ContainerRecord

_log = log.get(__name__)


def stop_signal(rec: ContainerRecord) -> str:
    """The image's STOPSIGNAL ("SIGUSR1", "10", "USR1"), else SIGTERM, as a name runc accepts."""
    raw = rec.stop_signal.strip().upper()
    if not raw:
        return "SIGTERM"
    if raw.isdigit():
        try:
            return signal.Signals(int(raw)).name
        except ValueError:
            return "SIGTERM"
    name = raw if raw.startswith("SIG") else "SIG" + raw
    return name if name in signal.Signals.__members__ else "SIGTERM"


async def terminate(deps: ContainerDeps, rec: ContainerRecord, grace: float,
                    wait_exit: Callable[[str, float], Awaitable[bool]]) -> None:
    """Stop signal, up to grace seconds, then SIGKILL to all of its processes and wait for the exit.

    Raises:
        DeadlineExceeded: the container did not die within runtime.stop_timeout after SIGKILL.
    """
    if rec.started_at == 0:  # a container never started in a sandbox has only its shim to end (conmon.py)
        conmon.shim_abort(deps.layout.bundle(rec.id))
    if grace > 0:
        delivered = await send(deps, rec, stop_signal(rec))
        if await wait_exit(rec.id, grace if delivered else 0.5):
            return
    await send(deps, rec, "SIGKILL", all_processes=True)
    bound = float(deps.cfg.runtime.stop_timeout)
    if not await wait_exit(rec.id, bound):
        raise DeadlineExceeded(f"container {rec.meta_name} ({rec.id[:12]}) did not exit within {bound:g}s of "
                               "SIGKILL (runtime.stop_timeout); it may be stuck in the kernel (D state)")


async def send(deps: ContainerDeps, rec: ContainerRecord, sig: str, *, all_processes: bool = False) -> bool:
    """Signal a container through runc, or through its own cgroup when runc has lost it; whether any process
    was signalled.

    runc refuses a container whose state it cannot load (Runc.damaged_state) and says "does not exist" of
    one whose state is gone, while the container's processes live on: a stop that took runc's word would
    wait out its bound and report the container stuck in the kernel. Its processes are found in its cgroup
    instead (membership, not a pid alone, so a reused pid is never hit); conmon then sees the exit.

    Raises:
        ExternalCommandError: runc failed for another reason.
    """
    runc = deps.runcs[rec.runtime_handler]
    try:
        if await runc.kill(rec.id, sig, all_processes=all_processes):
            return True
    except ExternalCommandError:
        if not runc.damaged_state(rec.id):
            raise
    if runc.sandboxed or not rec.cgroup_path:
        return False
    reached = await asyncio.to_thread(deps.cgroups.kill_procs, rec.cgroup_path, signal.Signals[sig],
                                      only=None if all_processes else (rec.pid,))
    if reached:
        log.event(_log, 30, "the runtime cannot signal the container; its processes were signalled through "
                  "its cgroup", container=rec.id, signal=sig, pids=reached,
                  damage=runc.damaged_state(rec.id) or f"{runc.name} does not know the container")
    return reached > 0


__all__ = ["send", "stop_signal", "terminate"]
