"""crib's records and OCI specs <-> NRI messages.

A plugin sees a container as the OCI spec crib is about to run (args, env, mounts, hooks, devices,
resources, cgroup path, rlimits, namespaces) plus its CRI identity and state from the record. Resources
convert both ways: OCI linux.resources -> NRI LinuxResources for the plugin, and the fields a plugin set in
an NRI LinuxResources back onto an OCI linux.resources dict (only the fields it set: the Optional* wrappers
say which).
"""

from __future__ import annotations

from typing import Any

from crib._proto.nri.v1alpha1 import api_pb2 as api
from crib.state.records import ContainerRecord, Phase, SandboxRecord

_NAMESPACE_PATHS = (("network", "netns_path"), ("ipc", "ipcns_path"), ("uts", "utsns_path"))
HOOK_KINDS = (("prestart", "prestart"), ("create_runtime", "createRuntime"),
              ("create_container", "createContainer"), ("start_container", "startContainer"),
              ("poststart", "poststart"), ("poststop", "poststop"))  # (NRI field, OCI key)


def pod(rec: SandboxRecord) -> api.PodSandbox:
    linux = api.LinuxPodSandbox(
        cgroup_parent=rec.cgroup_parent,
        namespaces=[api.LinuxNamespace(type=kind, path=getattr(rec, attr))
                    for kind, attr in _NAMESPACE_PATHS if getattr(rec, attr)])
    if rec.infra_id:
        linux.cgroups_path = f"{rec.cgroup_parent.rstrip('/')}/crib-{rec.infra_id}"
    return api.PodSandbox(id=rec.id, name=rec.meta.name, uid=rec.meta.uid, namespace=rec.meta.namespace,
                          labels=rec.labels, annotations=rec.annotations, runtime_handler=rec.runtime_handler,
                          linux=linux, pid=rec.infra_pid, ips=list(rec.ips))


def state(rec: ContainerRecord) -> int:
    if rec.phase is Phase.CREATING:
        return int(api.CONTAINER_UNKNOWN)
    if rec.exited:
        return int(api.CONTAINER_STOPPED)
    if rec.running:
        return int(api.CONTAINER_RUNNING)
    return int(api.CONTAINER_CREATED)


def refresh(msg: api.Container, rec: ContainerRecord) -> api.Container:
    """msg with the record's state fields (state, pid, times, exit status) brought up to date."""
    msg.state = state(rec)  # type: ignore[assignment]
    msg.pid = rec.pid
    msg.created_at, msg.started_at, msg.finished_at = rec.created_at, rec.started_at, rec.finished_at
    msg.exit_code, msg.status_reason, msg.status_message = rec.exit_code, rec.reason, rec.message
    return msg


def container(rec: ContainerRecord, spec: dict[str, Any] | None) -> api.Container:
    """The NRI view of a container: its record, and its OCI spec when there is one."""
    digest = rec.image_ref.split("@", 1)[1] if "@" in rec.image_ref else ""
    msg = api.Container(id=rec.id, pod_sandbox_id=rec.sandbox_id, name=rec.meta_name, labels=rec.labels,
                        annotations=rec.annotations,
                        image=api.Image(name=rec.image, digest=digest, config_digest=rec.image_id))
    if spec is not None:
        fill_from_spec(msg, spec)
    return refresh(msg, rec)


def fill_from_spec(msg: api.Container, spec: dict[str, Any]) -> None:
    """Replace msg's spec-derived fields with what spec says."""
    process, linux = spec.get("process", {}), spec.get("linux", {})
    for name in ("args", "env", "mounts", "rlimits", "annotations"):
        msg.ClearField(name)
    msg.linux.Clear()
    msg.hooks.Clear()
    msg.annotations.update(spec.get("annotations", {}))
    msg.args.extend(process.get("args", []))
    msg.env.extend(process.get("env", []))
    user = process.get("user", {})
    msg.user.CopyFrom(api.User(uid=user.get("uid", 0), gid=user.get("gid", 0),
                               additional_gids=user.get("additionalGids", [])))
    for m in spec.get("mounts", []):
        msg.mounts.add(destination=m.get("destination", ""), type=m.get("type", ""),
                       source=m.get("source", ""), options=m.get("options", []))
    for r in process.get("rlimits", []):
        msg.rlimits.add(type=r["type"], hard=r["hard"], soft=r["soft"])
    hooks = spec.get("hooks", {})
    for field, key in HOOK_KINDS:
        for h in hooks.get(key, []):
            hook = getattr(msg.hooks, field).add(path=h["path"], args=h.get("args", []), env=h.get("env", []))
            if "timeout" in h:
                hook.timeout.value = h["timeout"]
    for ns in linux.get("namespaces", []):
        msg.linux.namespaces.add(type=ns["type"], path=ns.get("path", ""))
    for d in linux.get("devices", []):
        dev = msg.linux.devices.add(path=d["path"], type=d["type"], major=d.get("major", 0),
                                    minor=d.get("minor", 0))
        for key, field in (("fileMode", "file_mode"), ("uid", "uid"), ("gid", "gid")):
            if key in d:
                getattr(dev, field).value = d[key]
    msg.linux.resources.CopyFrom(resources_to_nri(linux.get("resources", {})))
    if "oomScoreAdj" in process:
        msg.linux.oom_score_adj.value = process["oomScoreAdj"]
    msg.linux.cgroups_path = linux.get("cgroupsPath", "")
    msg.linux.sysctl.update(linux.get("sysctl", {}))


# (OCI key, NRI field) pairs; the NRI fields are Optional* wrappers, set only when the plugin sets them.
_MEMORY = (("limit", "limit"), ("reservation", "reservation"), ("swap", "swap"), ("kernel", "kernel"),
           ("kernelTCP", "kernel_tcp"), ("swappiness", "swappiness"),
           ("disableOOMKiller", "disable_oom_killer"), ("useHierarchy", "use_hierarchy"))
_CPU = (("shares", "shares"), ("quota", "quota"), ("period", "period"),
        ("realtimeRuntime", "realtime_runtime"), ("realtimePeriod", "realtime_period"))


def resources_to_nri(res: dict[str, Any]) -> api.LinuxResources:
    """OCI linux.resources -> NRI LinuxResources."""
    out = api.LinuxResources()
    for key, field in _MEMORY:
        if key in res.get("memory", {}):
            getattr(out.memory, field).value = res["memory"][key]
    cpu = res.get("cpu", {})
    for key, field in _CPU:
        if key in cpu:
            getattr(out.cpu, field).value = cpu[key]
    out.cpu.cpus, out.cpu.mems = cpu.get("cpus", ""), cpu.get("mems", "")
    for h in res.get("hugepageLimits", []):
        out.hugepage_limits.add(page_size=h["pageSize"], limit=h["limit"])
    out.unified.update(res.get("unified", {}))
    for d in res.get("devices", []):
        rule = out.devices.add(allow=d.get("allow", False), type=d.get("type", ""),
                               access=d.get("access", ""))
        if d.get("major") is not None:
            rule.major.value = d["major"]
        if d.get("minor") is not None:
            rule.minor.value = d["minor"]
    if "pids" in res:
        out.pids.limit = res["pids"].get("limit", 0)
    return out


def apply_resources(res: dict[str, Any], nri: api.LinuxResources) -> list[str]:
    """Set on OCI resources every field nri sets; returns the names of the fields set (for ownership).

    Device rules are appended. The NRI fields crib cannot honour (block I/O and RDT classes) are left to
    the caller, which refuses them.
    """
    changed: list[str] = []
    if nri.HasField("memory"):
        for key, field in _MEMORY:
            if nri.memory.HasField(field):
                res.setdefault("memory", {})[key] = getattr(nri.memory, field).value
                changed.append(f"memory.{key}")
    if nri.HasField("cpu"):
        for key, field in _CPU:
            if nri.cpu.HasField(field):
                res.setdefault("cpu", {})[key] = getattr(nri.cpu, field).value
                changed.append(f"cpu.{key}")
        for key in ("cpus", "mems"):
            if getattr(nri.cpu, key):
                res.setdefault("cpu", {})[key] = getattr(nri.cpu, key)
                changed.append(f"cpu.{key}")
    for h in nri.hugepage_limits:
        pages = [p for p in res.get("hugepageLimits", []) if p["pageSize"] != h.page_size]
        res["hugepageLimits"] = [*pages, {"pageSize": h.page_size, "limit": h.limit}]
        changed.append(f"hugepageLimits.{h.page_size}")
    for key, value in nri.unified.items():
        res.setdefault("unified", {})[key] = value
        changed.append(f"unified.{key}")
    for d in nri.devices:
        rule: dict[str, Any] = {"allow": d.allow, "access": d.access or "rwm"}
        if d.type:
            rule["type"] = d.type
        if d.HasField("major"):
            rule["major"] = d.major.value
        if d.HasField("minor"):
            rule["minor"] = d.minor.value
        res.setdefault("devices", []).append(rule)
    if nri.HasField("pids"):
        res["pids"] = {"limit": nri.pids.limit}
        changed.append("pids.limit")
    return changed


__all__ = ["HOOK_KINDS", "apply_resources", "container", "fill_from_spec", "pod", "refresh",
           "resources_to_nri", "state"]
