"""What each RuntimeClass handler can do, found out once at start-up (CRI RuntimeHandlerFeatures).

Status tells kubelet, per handler, whether it supports recursive read-only mounts and user namespaces;
kubelet refuses pods that need what their handler lacks, so both answers must be true answers:

* recursive read-only mounts: the runtime lists "rro" in `<runtime> features` and the kernel is >= 5.12;
* user namespaces ("user namespaces and idmap mounts", as the CRI defines it): the kernel has them, the
  runtime lists the user namespace in `features`, and crib can ID-map the filesystem holding its image
  layers (it makes the ID-mapped mounts itself, system/idmap.py). A sandboxed handler (gVisor, Kata) does
  not get them: its sandbox, not the host kernel, runs the pod's processes.

A handler that cannot keeps the reason, which Status shows (verbose info) and RunPodSandbox returns when a
pod asks for what the handler lacks.
"""

from __future__ import annotations

import contextlib
import platform
import stat
from dataclasses import dataclass
from pathlib import Path

from crib import log
from crib.runtime.runc import Runc
from crib.system import idmap, ns

_log = log.get(__name__)
# The probe's user namespace maps one id far from anything a pod gets; nothing runs in it.
_PROBE_MAP = "0 4000000000 1\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerFeatures:
    """One handler's RuntimeHandlerFeatures, with the reason user namespaces are off ("" when on)."""

    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False
    user_namespaces_reason: str = ""


def kernel_at_least(major: int, minor: int) -> bool:
    """Whether the running kernel is at least major.minor (False when its release cannot be read)."""
    try:
        parts = platform.release().split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def _kernel_problem(layers: Path, runroot: Path) -> str:
    if not Path("/proc/self/ns/user").exists():
        return "the kernel has no user namespaces (CONFIG_USER_NS)"
    try:
        if int(Path("/proc/sys/user/max_user_namespaces").read_text().strip() or "0") < 1:
            return "user.max_user_namespaces is 0; raise it with sysctl"
    except (OSError, ValueError):
        pass
    if not kernel_at_least(5, 19):
        return f"kernel {platform.release()} is older than 5.19 (ID-mapped overlayfs layers)"
    layers.mkdir(parents=True, exist_ok=True)
    for d in (runroot, *runroot.parents):
        if not d.stat().st_mode & stat.S_IXOTH:
            return (f"{d} is not searchable by others (mode {d.stat().st_mode & 0o777:o}): a user-namespaced "
                    f"pod's root must reach its root filesystem under {runroot}; chmod o+x {d}")
    return ""


async def userns_problem(layers: Path, probe_pin: Path, runroot: Path) -> str:
    """Why this node cannot run user-namespaced pods ("" = it can): kernel support, a runroot its pods'
    roots can reach, then an ID-mapped mount of the directory holding the image layers, through a user
    namespace pinned at probe_pin."""
    problem = _kernel_problem(layers, runroot)
    if problem:
        return problem
    req = ns.PinRequest(user=probe_pin, uid_map=_PROBE_MAP, gid_map=_PROBE_MAP)
    ns.unpin(probe_pin)  # a daemon killed during its own probe left it
    try:
        ns.prepare_targets(req)
        await ns.pin(req)
        problem = idmap.probe(layers, probe_pin)
    except Exception as exc:
        return f"cannot create a user namespace: {exc}"
    finally:
        with contextlib.suppress(OSError):
            ns.unpin(probe_pin)
    if problem:
        return f"ID-mapped mounts do not work on {layers}: {problem}"
    return ""


async def probe(runc: Runc, *, userns_problem: str) -> HandlerFeatures:
    """The features of one handler, given the node's user-namespace problem ("" = none)."""
    try:
        # A sandboxed runtime's features are not the node's kernel's (and runsc has no such command).
        features = {} if runc.sandboxed else await runc.features()
    except Exception as exc:  # runsc and old runtimes have no `features`: assume the conservative answers
        log.event(_log, 20, "runtime has no usable `features` command; assuming no rro",
                  handler=runc.handler, error=str(exc)[:200])
        features = {}
    rro = "rro" in (features.get("mountOptions") or ()) and kernel_at_least(5, 12)
    namespaces = (features.get("linux") or {}).get("namespaces") or ()
    if runc.sandboxed:
        reason = (f"handler {runc.handler!r} is a sandboxed runtime ({runc.name}): its sandbox, not the "
                  "node's kernel, runs the pod, and crib does not map its ids")
    elif userns_problem:
        reason = userns_problem
    elif "user" not in namespaces:
        reason = f"`{runc.name} features` does not list the user namespace"
    else:
        reason = ""
    if reason:
        log.event(_log, 20, "user namespaces unavailable", handler=runc.handler, reason=reason)
    return HandlerFeatures(recursive_read_only_mounts=rro and not runc.sandboxed,
                           user_namespaces=not reason, user_namespaces_reason=reason)


__all__ = ["HandlerFeatures", "kernel_at_least", "probe", "userns_problem"]
