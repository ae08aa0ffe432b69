"""Cgroup parents shared between pods: made by the first pod that needs one, removed with the last.

A pod records the cgroups its RunPodSandbox created (`cgroups_created`, outermost first). When the pod goes,
or when its creation is undone, each of those that another pod still lives under is handed over to that
pod (added to its record), and the rest are removed. A pod in `deps.leaving` takes no hand-over: the caller
puts it there before releasing and keeps it there until its record is deleted, so a parent is never handed
to a pod that is about to vanish with it. Without the hand-over, the undo of a failed first pod (or the
removal of the first pod while others run) would leave /kubepods-like parents that nobody removes.
"""

from __future__ import annotations

import asyncio
import dataclasses

from crib import log
from crib.sandbox.deps import SandboxDeps
from crib.state.records import SandboxRecord

_log = log.get(__name__)


async def release(deps: SandboxDeps, rec: SandboxRecord) -> None:
    """Hand over or remove the cgroups in rec.cgroups_created (see the module note; rec.id must be leaving,
    and rec the pod's current record: another pod may have handed it a parent meanwhile)."""
    mine = _hand_over(deps, rec)
    failed = await asyncio.to_thread(deps.cgroups.remove_created, mine) if mine else []
    if failed:
        log.event(_log, 30, "pod cgroups not removed", pod=rec.id, problems="; ".join(failed))


def _hand_over(deps: SandboxDeps, rec: SandboxRecord) -> list[str]:
    """The cgroups rec created that no other pod lives under; those still in use pass to such a pod."""
    mine = []
    for cgroup in rec.cgroups_created:
        heir = next((s for s in deps.store.sandboxes.values()
                     if s.id != rec.id and s.id not in deps.leaving
                     and (s.cgroup_parent == cgroup or s.cgroup_parent.startswith(cgroup.rstrip("/") + "/"))),
                    None)
        if heir is None:
            mine.append(cgroup)
            continue
        owned = sorted(set(heir.cgroups_created) | {cgroup}, key=lambda c: c.count("/"))
        deps.store.put_sandbox(dataclasses.replace(heir, cgroups_created=tuple(owned)))
    return mine


__all__ = ["release"]
