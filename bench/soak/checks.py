"""The soak's invariants: crib's word against the host's, records across restarts, and the final sweep.

- Agreement (every CHECK_EVERY seconds, skipped while the daemon restarts): each container crib lists has
  the state runc reports (RUNNING: running or paused; CREATED: created; EXITED: stopped or unknown to runc),
  and each READY pod has its network namespace pinned. A disagreement is looked at again after BOUND
  seconds (an exit may be on its way), then every second for BOUND more; one that never clears is a
  violation.
- Restarts: the pods listed before a daemon kill (except those the client was creating or removing) are
  listed after it; the state database passes an integrity check and every row decodes, read while the
  daemon is down.
- The end: with every pod removed and the daemon stopped, nothing of crib's is left on the host (mounts,
  conmon processes, runc state, cgroups, netns pins, files; the bridge's addresses, veths and rules), the
  daemon stopped cleanly, and the database is intact and empty.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.soak.client import Rpc, Stats
from bench.soak.env import Env
from crib._proto.runtime.v1 import api_pb2 as api
from crib.state.codec import decode
from crib.state.records import ContainerRecord, SandboxRecord
from tests.fixtures import leaks

BOUND = 5.0
_ACCEPT = {
    api.CONTAINER_RUNNING: ("running", "paused"),
    api.CONTAINER_CREATED: ("created",),
    api.CONTAINER_EXITED: ("stopped", None),
}


def runc_states(env: Env) -> dict[str, str]:
    """id -> status of every container in crib's runc root (default handler)."""
    done = subprocess.run(["runc", "--root", str(env.runc_root), "list", "--format", "json"],
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return {}
    return {c["id"]: c["status"] for c in json.loads(done.stdout) or []}


def _pinned(path: Path) -> bool:
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def disagreements(env: Env, rpc: Rpc) -> dict[str, str] | None:
    """object id -> what disagrees; None when crib could not be asked."""
    containers = rpc.call("ListContainers", api.ListContainersRequest())
    pods = rpc.call("ListPodSandbox", api.ListPodSandboxRequest())
    if containers is None or pods is None:
        return None
    runc = runc_states(env)
    out = {}
    for c in containers.containers:
        accepted = _ACCEPT.get(c.state)
        seen = runc.get(c.id)
        if accepted is not None and seen not in accepted:
            out[c.id] = f"container {c.id[:12]} is {api.ContainerState.Name(c.state)} to crib, {seen} to runc"
    for p in pods.items:
        if p.state == api.SANDBOX_READY and not _pinned(env.runroot / "netns" / p.id):
            out[p.id] = f"pod {p.id[:12]} is READY to crib but its network namespace is not pinned"
    return out


def check_agreement(env: Env, rpc: Rpc, stats: Stats, restarting: Any) -> None:
    if restarting.is_set():
        return
    first = disagreements(env, rpc)
    if not first:
        return
    time.sleep(BOUND)
    if restarting.is_set():
        return
    again = disagreements(env, rpc) or {}
    # Seen twice, BOUND apart; a third look every second for BOUND more keeps only what never agreed in
    # between (two glimpses can each catch a different moment of an exit on its way: runc already says
    # stopped, crib records it a few ms later).
    persistent = set(first) & set(again)
    deadline = time.monotonic() + BOUND
    while persistent and time.monotonic() < deadline and not restarting.is_set():
        time.sleep(1.0)
        now = disagreements(env, rpc)
        if now is not None:
            persistent &= set(now)
    if restarting.is_set():
        return
    for key in persistent:
        stats.violation(f"still after {2 * BOUND:g}s: {again[key]}")
    stats.count("actions", "agreement checks")


def check_database(env: Env, stats: Stats, *, empty: bool = False) -> None:
    """Integrity check and every row decoded (the daemon must be down or idle)."""
    path = env.root / "state.db"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
            result = db.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                stats.violation(f"state database integrity check: {result}")
            rows = 0
            for table, cls in (("sandboxes", SandboxRecord), ("containers", ContainerRecord)):
                for (data,) in db.execute(f"SELECT data FROM {table}"):
                    decode(cls, data)
                    rows += 1
        if empty and rows:
            stats.violation(f"state database still holds {rows} records after everything was removed")
    except Exception as exc:
        stats.violation(f"state database unreadable: {type(exc).__name__}: {exc}")
    stats.count("actions", "database checks")


def listed_pods(rpc: Rpc, patience: float = 0.0) -> set[str] | None:
    """Ids of the pods crib lists; retried for `patience` seconds (the client reconnects after a restart)."""
    deadline = time.monotonic() + patience
    while True:
        reply = rpc.call("ListPodSandbox", api.ListPodSandboxRequest())
        if reply is not None:
            return {p.id for p in reply.items}
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def check_pods_survived(before: set[str], after: set[str] | None, stats: Stats) -> None:
    if after is None:
        stats.violation("the restarted daemon could not list its pods")
        return
    for lost in sorted(before - after):
        stats.violation(f"pod {lost[:12]} listed before the daemon was killed is gone after its restart")


def remove_everything(rpc: Rpc, stats: Stats, deadline: float) -> bool:
    """Stop and remove every pod until none is left (each call may fail under a late fault; retried)."""
    while time.monotonic() < deadline:
        reply = rpc.call("ListPodSandbox", api.ListPodSandboxRequest())
        if reply is not None and not reply.items:
            containers = rpc.call("ListContainers", api.ListContainersRequest())
            if containers is not None and not containers.containers:
                return True
        for pod in reply.items if reply is not None else ():
            rpc.call("StopPodSandbox", api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
            rpc.call("RemovePodSandbox", api.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
        time.sleep(1)
    stats.violation("pods were still listed after the final removal's time ran out")
    return False


def final_sweep(env: Env, stats: Stats) -> None:
    """After the daemon stopped: nothing of crib's left (see the module note)."""
    workdir = env.daemon.workdir
    root_mount = str(env.root)
    allowed = (*leaks.DAEMON_FILES, "root/lost+found")  # crib's root is an ext4 of its own here
    problems = [p for p in leaks.check(workdir, cgroup_fragment=env.tag, allowed=allowed)
                if p != f"mount left: {root_mount}"]
    problems += [f"runc still has {cid}: {status}" for cid, status in runc_states(env).items()]
    problems += env.bed.leaks(stats.pod_ips)
    for problem in problems:
        stats.violation(f"left behind: {problem}")


__all__ = ["check_agreement", "check_database", "check_pods_survived", "final_sweep", "listed_pods",
           "remove_everything", "runc_states"]
