"""The PID-namespace holder of a pod whose containers share one PID namespace (pid mode POD).

Network, IPC and UTS namespaces can be pinned to files with no process in them; a PID namespace cannot:
it dies with its first process, and none can join it afterwards. So such a pod gets one tiny process,
Debian's catatonit run as `catatonit -P` (pause mode: it sleeps, reaps orphans, and exits only on a
signal). It is a static binary (no libraries to provide), copied at start-up into a minimal read-only root
filesystem under <runroot>/infra/rootfs; runc runs it under conmon like any container, with the runc id of
the pod, in the pod's cgroup parent, joining the pod's pinned namespaces. Pods that do not share a PID
namespace (kubelet's default) have no process at all.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

from crib import oci
from crib.errors import ExternalCommandError
from crib.runtime import conmon, exits
from crib.sandbox.deps import SandboxDeps
from crib.sandbox.info import sandbox_info
from crib.state.records import SandboxRecord

STOP_WAIT = 5.0


async def start(deps: SandboxDeps, rec: SandboxRecord, config: Any) -> int:
    """Create and start the holder; returns its pid (the caller registers remove() as the undo first)."""
    bundle = deps.layout.bundle(rec.id)
    bundle.mkdir(parents=True, mode=0o711)  # reachable by a user-namespaced pod's root (layout.py)
    spec = oci.build_infra_spec(oci.InfraInputs(
        sandbox_config=config, sandbox=sandbox_info(deps.layout, rec),
        rootfs_path=str(deps.layout.infra_rootfs), host=deps.host,
        allowed_annotations=tuple(deps.cfg.runtime.handlers[rec.runtime_handler].allowed_annotations),
        sandboxed=deps.runc(rec.runtime_handler).sandboxed))
    (bundle / "config.json").write_text(json.dumps(spec))
    runc = deps.runc(rec.runtime_handler)
    launch = conmon.Launch(cid=rec.id, name=f"{rec.meta.name}-infra", bundle=bundle, log_path="", runc=runc)
    created = await conmon.create(deps.monitor, launch,
                                  lambda pid: deps.cgroups.attach(rec.cgroup_parent, pid))
    await runc.start(rec.id)
    return created.pid


async def stop(deps: SandboxDeps, rec: SandboxRecord) -> None:
    """SIGKILL the holder (it only holds) and wait briefly for conmon to record its exit."""
    runc = deps.runc(rec.runtime_handler)
    try:
        await runc.kill(rec.id, "SIGKILL", all_processes=True)
    except ExternalCommandError:
        # runc cannot load its state of the holder (Runc.damaged_state: a crash, a full disk): the holder
        # is killed as itself, found in the pod's cgroup (membership, so a reused pid is never hit), and
        # removal drops runc's unusable state.
        cgroup = _cgroup(rec)
        if not runc.damaged_state(rec.id) or not cgroup:
            raise
        await asyncio.to_thread(deps.cgroups.kill_procs, cgroup)
    for _ in range(int(STOP_WAIT / 0.02)):
        if exits.read_exit(deps.layout.exits, rec.id) is not None or not conmon.monitor_alive(
                deps.layout.bundle(rec.id)):
            return
        await asyncio.sleep(0.02)


async def remove(deps: SandboxDeps, sid: str) -> None:
    """Delete the holder's runc state, conmon leftovers and bundle (idempotent)."""
    bundle = deps.layout.bundle(sid)
    if not bundle.exists():
        return
    rec = deps.store.sandboxes.get(sid)
    handler = rec.runtime_handler if rec is not None else deps.cfg.runtime.default_handler
    conmon.kill_monitor(bundle)
    await deps.runc(handler).delete(sid, force=True)
    if rec is not None and (cgroup := _cgroup(rec)):  # runc's job, unless its state was damaged (stop())
        await asyncio.to_thread(deps.cgroups.kill_and_remove, cgroup)
    exits.forget(deps.layout.exits, sid)
    (deps.layout.attach / sid).unlink(missing_ok=True)
    await asyncio.to_thread(shutil.rmtree, bundle, True)


def _cgroup(rec: SandboxRecord) -> str:
    """The holder's own cgroup (runc's cgroupsPath for it), "" when the pod has no cgroup parent."""
    try:
        return oci.cgroups_path(rec.cgroup_parent, rec.id) if rec.cgroup_parent else ""
    except ValueError:
        return ""


__all__ = ["remove", "start", "stop"]
