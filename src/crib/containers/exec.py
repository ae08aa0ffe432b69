"""ExecSync, UpdateContainerResources and ReopenContainerLog: the calls that act on a running container."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
from pathlib import Path
from typing import Any

from crib import oci
from crib.containers.create import resources_record
from crib.containers.deps import ContainerDeps
from crib.errors import DeadlineExceeded, FailedPrecondition
from crib.hooks import ContainerStep
from crib.runtime import conmon
from crib.runtime.runc import ExecResult, InteractiveExec
from crib.state.records import ContainerRecord

NO_TIMEOUT = 24 * 3600.0
REOPEN_WAIT = 5.0


def _spec(deps: ContainerDeps, rec: ContainerRecord) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((deps.layout.bundle(rec.id) / "config.json").read_text())
    return data


def require_running(rec: ContainerRecord, what: str) -> None:
    if not rec.running:
        state = "exited" if rec.exited else "not started"
        raise FailedPrecondition(f"{what}: container {rec.meta_name} ({rec.id[:12]}) is {state}, not running")


async def exec_sync(deps: ContainerDeps, rec: ContainerRecord, cmd: list[str], timeout: float) -> ExecResult:
    """Run cmd in the container as its own process runs (user, env, caps, seccomp), capped and bounded.

    Raises:
        FailedPrecondition: the container is not running.
        DeadlineExceeded: the command ran past timeout (it was killed, with its process group).
        ExternalCommandError: runc could not start the command (no such binary, ...).
    """
    require_running(rec, "ExecSync")
    process = oci.exec_process(_spec(deps, rec), cmd, tty=False)
    path = deps.layout.bundle(rec.id) / f"exec-{secrets.token_hex(8)}.json"
    path.write_text(json.dumps(process))
    try:
        result = await deps.runcs[rec.runtime_handler].exec(
            rec.id, path, timeout=timeout if timeout > 0 else NO_TIMEOUT,
            output_limit=deps.cfg.runtime.exec_output_max)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if result.timed_out:
        raise DeadlineExceeded(f"ExecSync {cmd[0]!r} in container {rec.meta_name} did not finish within "
                               f"{timeout:g}s; it was killed")
    return result


async def exec_attached(deps: ContainerDeps, rec: ContainerRecord, cmd: list[str], *, tty: bool, stdin: bool,
                        stdout: bool, stderr: bool) -> InteractiveExec:
    """Start cmd in the container for a streaming session (exec -it): its stdio becomes the session's.

    Raises:
        FailedPrecondition: the container is not running.
        InvalidArgument: an empty command.
        ExternalCommandError: runc could not be started.
    """
    require_running(rec, "Exec")
    process = oci.exec_process(_spec(deps, rec), cmd, tty=tty)
    path = deps.layout.bundle(rec.id) / f"exec-{secrets.token_hex(8)}.json"
    path.write_text(json.dumps(process))
    try:
        return await deps.runcs[rec.runtime_handler].exec_attached(rec.id, path, tty=tty, stdin=stdin,
                                                                   stdout=stdout, stderr=stderr)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise


def attach(deps: ContainerDeps, rec: ContainerRecord) -> conmon.Attachment:
    """Connect to a running container's stdio through its conmon.

    Raises:
        FailedPrecondition: the container is not running, or its monitor does not answer.
    """
    require_running(rec, "Attach")
    return conmon.attach(deps.layout.bundle(rec.id), stdin_once=rec.stdin_once, tty=rec.tty)


async def update_resources(deps: ContainerDeps, rec: ContainerRecord, resources: Any) -> ContainerRecord:
    """`runc update` with the validated resources; the record keeps what was applied."""
    if rec.exited:
        raise FailedPrecondition(f"UpdateContainerResources: container {rec.meta_name} has exited")
    linux = oci.linux_resources(resources, container=rec.meta_name, host=deps.host)
    linux = await deps.hooks.update(rec, linux)
    await apply_linux_resources(deps, rec, linux)
    applied = {"oomScoreAdj": rec.resources.oom_score_adj if rec.resources else resources.oom_score_adj}
    rec = deps.store.put_container(dataclasses.replace(rec, resources=resources_record(resources, applied)))
    await deps.hooks.container(ContainerStep.POST_UPDATE, rec)
    return rec


async def apply_linux_resources(deps: ContainerDeps, rec: ContainerRecord, linux: dict[str, Any]) -> None:
    """`runc update` with OCI linux.resources (only the fields given change), kept in config.json too."""
    if rec.exited:
        raise FailedPrecondition(f"container {rec.meta_name} ({rec.id[:12]}) has exited; its resources "
                                 "cannot change")
    await deps.runcs[rec.runtime_handler].update(rec.id, linux)
    spec = _spec(deps, rec)
    current = spec.setdefault("linux", {}).setdefault("resources", {})
    for key, value in linux.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            current[key].update(value)
        else:
            current[key] = value
    (deps.layout.bundle(rec.id) / "config.json").write_text(json.dumps(spec))


async def reopen_log(deps: ContainerDeps, rec: ContainerRecord) -> None:
    """Have conmon reopen the log file kubelet just rotated, and wait until the new file exists.

    conmon handles its control FIFO asynchronously; kubelet (and critest) look for the new file as soon
    as the call returns, so the call returns only once it is there.

    Raises:
        FailedPrecondition: the container is not running (CRI: then no new file may be created).
        DeadlineExceeded: conmon did not create the file within REOPEN_WAIT.
    """
    require_running(rec, "ReopenContainerLog")
    if not rec.log_path:
        return
    if not conmon.reopen_log(Path(deps.layout.bundle(rec.id))):
        raise FailedPrecondition(f"ReopenContainerLog: the monitor of container {rec.meta_name} is gone")
    path = Path(rec.log_path)
    for _ in range(int(REOPEN_WAIT / 0.005)):
        if _exists(path):  # a stat on tmpfs/local disk; not worth a thread
            return
        await asyncio.sleep(0.005)
    raise DeadlineExceeded(f"ReopenContainerLog: conmon did not reopen {path} within {REOPEN_WAIT:g}s")


def _exists(path: Path) -> bool:
    return path.exists()


__all__ = ["apply_linux_resources", "attach", "exec_attached", "exec_sync", "reopen_log", "require_running",
           "update_resources"]
