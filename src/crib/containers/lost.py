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
"""

from __future__ import annotations

import dataclasses
import time

from crib.containers.deps import ContainerDeps
from crib.errors import NotFound
from crib.state.records import ContainerRecord

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


__all__ = ["STOPPED", "UNKNOWN_EXIT_CODE", "UNKNOWN_REASON", "runtime_status", "unknown_exit"]
