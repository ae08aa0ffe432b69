"""StopPodSandbox and RemovePodSandbox: every step idempotent, so both may be repeated, and a daemon
restarted half-way (or cleaning up a pod it found still CREATING) runs the same steps again safely.

Stop:   containers (stop signal, grace, SIGKILL) -> plugins' StopPodSandbox -> PID holder -> CNI DEL ->
        unmount /dev/shm
Remove: REMOVING -> containers removed -> stop's steps -> PID holder deleted -> unpin namespaces ->
        run dir -> cgroup parents crib created (unless another pod still uses them) -> row deleted ->
        plugins' RemovePodSandbox
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time

from crib import log
from crib.hooks import PodStep
from crib.sandbox import infra, parents
from crib.sandbox.create import network_request
from crib.sandbox.deps import SandboxDeps
from crib.state.records import Phase, SandboxRecord
from crib.system import mount, ns

_log = log.get(__name__)


async def stop(deps: SandboxDeps, rec: SandboxRecord) -> SandboxRecord:
    """Stop what the pod runs and release its network; the namespaces stay pinned until removal."""
    await deps.containers.stop_all(rec.id, float(deps.cfg.runtime.pod_stop_grace))
    await deps.hooks.pod(PodStep.STOP, rec)  # once per pod, however often stop is repeated
    if rec.stopped_at == 0 and rec.phase is Phase.CREATED:  # NOTREADY from here on, even if release fails
        rec = deps.store.put_sandbox(dataclasses.replace(rec, stopped_at=time.time_ns()))
    await release(deps, rec)
    return rec


async def release(deps: SandboxDeps, rec: SandboxRecord) -> None:
    """The parts of stop that do not involve containers."""
    if rec.infra_id:
        await infra.stop(deps, rec)
    if rec.network_mode != "node":
        await deps.network.teardown(network_request(rec))
    if rec.shm_path and rec.shm_path != "/dev/shm":
        mount.umount_all(rec.shm_path)


async def remove(deps: SandboxDeps, rec: SandboxRecord) -> None:
    """Remove the pod and everything it holds."""
    if rec.phase is not Phase.REMOVING:
        rec = deps.store.put_sandbox(dataclasses.replace(rec, phase=Phase.REMOVING))
    await deps.containers.remove_all(rec.id)
    await purge(deps, rec)
    await deps.hooks.pod(PodStep.REMOVE, rec)


async def purge(deps: SandboxDeps, rec: SandboxRecord) -> None:
    """Everything but the containers: also the undo of a pod found CREATING after a restart."""
    lay, sid = deps.layout, rec.id
    await release(deps, rec)
    await infra.remove(deps, sid)
    for path in (lay.netns(sid), lay.ipcns(sid), lay.utsns(sid), lay.userns(sid)):  # the owner last
        ns.unpin(path)
    rundir = lay.sandbox_run(sid)
    if rundir.exists():
        mount.umount_all(rundir / "shm")
        shutil.rmtree(rundir, ignore_errors=True)
    if deps.cgroups.v2:  # conmon's leaf (containers/create.py)
        await asyncio.to_thread(deps.cgroups.remove, f"{rec.cgroup_parent.rstrip('/')}/crib-conmon")
    deps.leaving.add(sid)
    try:
        await parents.release(deps, deps.store.sandboxes.get(sid, rec))
        deps.store.delete_sandbox(sid)
    finally:
        deps.leaving.discard(sid)


__all__ = ["purge", "release", "remove", "stop"]
