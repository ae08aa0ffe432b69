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
from crib.containers import lost
from crib.containers.create import resources_record
from crib.containers.deps import ContainerDeps
from crib.errors import DeadlineExceeded, ExternalCommandError, FailedPrecondition
from crib.hooks import ContainerStep
from crib.runtime import conmon
from crib.runtime.runc import ExecResult, InteractiveExec
from crib.state.records import ContainerRecord
from crib.system import atomic

NO_TIMEOUT = 24 * 3600.0
REOPEN_WAIT = 5.0


def read_spec(deps: ContainerDeps, rec: ContainerRecord, doing: str) -> dict[str, Any]:
    """The container's config.json (its OCI runtime spec), which exec and update derive from.

    Raises:
        FailedPrecondition: it is missing or damaged (a crash or a full disk while it was written, a hand).
            The container runs on; it can only be stopped and removed, so the message says so.
    """
    path = deps.layout.bundle(rec.id) / "config.json"
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or not isinstance(data.get("process"), dict):
            raise ValueError("not an OCI runtime spec: it has no process object")
        return data
    except FileNotFoundError:
        problem = "is missing"
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        problem = f"is damaged ({type(exc).__name__}: {exc})"
    raise FailedPrecondition(
        f"{doing}: the OCI runtime spec of container {rec.meta_name} ({rec.id[:12]}), {path}, {problem} (a "
        "crash or a full disk can leave it so); the container cannot be exec'd into or updated. Remove the "
        "container and create it again")


def _process(deps: ContainerDeps, rec: ContainerRecord, cmd: list[str], *, tty: bool,
             doing: str) -> dict[str, Any]:
    """The process.json of an exec, from the container's spec (a malformed process object is damage too)."""
    spec = read_spec(deps, rec, doing)
    try:
        return oci.exec_process(spec, cmd, tty=tty)
    except (KeyError, TypeError, AttributeError) as exc:
        raise FailedPrecondition(
            f"{doing}: the OCI runtime spec of container {rec.meta_name} ({rec.id[:12]}) is damaged (its "
            f"process object: {type(exc).__name__}: {exc}); remove the container and create it again"
        ) from exc


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
    process = _process(deps, rec, cmd, tty=False, doing="ExecSync")
    path = deps.layout.bundle(rec.id) / f"exec-{secrets.token_hex(8)}.json"
    path.write_text(json.dumps(process))
    try:
        result = await deps.runcs[rec.runtime_handler].exec(
            rec.id, path, timeout=timeout if timeout > 0 else NO_TIMEOUT,
            output_limit=deps.cfg.runtime.exec_output_max)
    except ExternalCommandError as exc:
        raise lost.refused(deps, rec, exc, "ExecSync in") from exc
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
    process = _process(deps, rec, cmd, tty=tty, doing="Exec")
    path = deps.layout.bundle(rec.id) / f"exec-{secrets.token_hex(8)}.json"
    path.write_text(json.dumps(process))
    try:
        return await deps.runcs[rec.runtime_handler].exec_attached(rec.id, path, tty=tty, stdin=stdin,
                                                                   stdout=stdout, stderr=stderr)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if isinstance(exc, ExternalCommandError):
            raise lost.refused(deps, rec, exc, "Exec in") from exc
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
    spec = read_spec(deps, rec, "UpdateContainerResources")  # before runc: a damaged spec changes nothing
    try:
        await deps.runcs[rec.runtime_handler].update(rec.id, linux)
    except ExternalCommandError as exc:
        raise lost.refused(deps, rec, exc, "UpdateContainerResources of") from exc
    linux_spec = spec.setdefault("linux", {})
    current = linux_spec.setdefault("resources", {}) if isinstance(linux_spec, dict) else {}
    for key, value in linux.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            current[key].update(value)
        else:
            current[key] = value
    # Whole: a crash or a full disk leaves the old spec, never half of the new one.
    atomic.write_atomic(deps.layout.bundle(rec.id) / "config.json", json.dumps(spec))


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
