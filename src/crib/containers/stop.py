"""Stopping a container: its stop signal, a grace period, then SIGKILL to every process it has.

The exit itself is learnt from conmon's exit file (runtime/exits.py), which the service turns into the
record's finished_at; this module waits for that, bounded at each stage.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

from crib.containers.deps import ContainerDeps
from crib.errors import DeadlineExceeded
from crib.runtime import conmon
from crib.state.records import ContainerRecord


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
    runc = deps.runcs[rec.runtime_handler]
    if rec.started_at == 0:  # a container never started in a sandbox has only its shim to end (conmon.py)
        conmon.shim_abort(deps.layout.bundle(rec.id))
    if grace > 0:
        delivered = await runc.kill(rec.id, stop_signal(rec))
        if await wait_exit(rec.id, grace if delivered else 0.5):
            return
    await runc.kill(rec.id, "SIGKILL", all_processes=True)
    bound = float(deps.cfg.runtime.stop_timeout)
    if not await wait_exit(rec.id, bound):
        raise DeadlineExceeded(f"container {rec.meta_name} ({rec.id[:12]}) did not exit within {bound:g}s of "
                               "SIGKILL (runtime.stop_timeout); it may be stuck in the kernel (D state)")


__all__ = ["stop_signal", "terminate"]
