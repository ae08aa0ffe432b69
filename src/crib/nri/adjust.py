"""Plugins' adjustments and updates, merged with ownership, applied to OCI specs and resources.

Design note. Plugins answer CreateContainer in index order, and each sees the container as the plugins
before it left it: crib applies each answer to the OCI spec at once and shows the next plugin the result.
Every value a plugin sets is claimed for it - a simple field (cgroups path, OOM score, memory limit, ...)
or one entry of a compound one (an annotation, the mount on /data, the env var FOO, ...). A second plugin
setting a claimed value is a conflict and fails the creation, naming both plugins: silently letting the
later one win would break whatever the first one relied on. A key prefixed with '-' removes the entry
(an annotation, mount destination, device path, env name, namespace type, sysctl); the remover then owns
it, so it may set it again but nobody else may. OCI hooks accumulate and never conflict.

Updates (to other containers from any event, or to the container being updated) merge the same way, per
target container, field by field. What crib cannot honour (block I/O and RDT classes, network devices,
scheduler, memory policy and I/O priority: runc 1.1 has no place for them, or ignores them) is refused with
the plugin's name rather than dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crib._proto.nri.v1alpha1 import api_pb2 as api
from crib.errors import PluginError
from crib.nri import convert
from crib.nri.cdi import CdiRegistry


class Owners:
    """Who set what, per container: (container id, field, key) -> plugin, "-plugin" once it removed it."""

    def __init__(self) -> None:
        self._owner: dict[tuple[str, str, str], str] = {}

    def claim(self, cid: str, what: str, key: str, plugin: str) -> None:
        """Record that plugin sets what[key] of container cid.

        Raises:
            PluginError: another plugin set (or removed) it already.
        """
        held = self._owner.get((cid, what, key))
        if held is not None and held not in (plugin, "-" + plugin):
            other = held.removeprefix("-")
            label = f"{what} {key!r}" if key else what
            raise PluginError(f"NRI plugins {other!r} and {plugin!r} both tried to set {label} of container "
                              f"{cid[:12]}; configure one of them to leave it alone")
        self._owner[(cid, what, key)] = plugin

    def clear(self, cid: str, what: str, key: str, plugin: str) -> None:
        self.claim(cid, what, key, plugin)
        self._owner[(cid, what, key)] = "-" + plugin

    def of(self, cid: str) -> dict[tuple[str, str], str]:
        """What plugins own of one container, for logs and tests."""
        return {(w, k): p for (c, w, k), p in self._owner.items() if c == cid}


def _removal(key: str) -> tuple[str, bool]:
    return (key[1:], True) if key.startswith("-") else (key, False)


def _unsupported(plugin: str, what: str) -> PluginError:
    return PluginError(f"NRI plugin {plugin!r} asked to set {what}, which crib cannot apply with runc 1.1; "
                       "configure the plugin not to")


def _depth(mount: dict[str, Any]) -> int:
    return len([p for p in str(mount.get("destination", "")).split("/") if p])


@dataclass(slots=True)
class SpecAdjuster:
    """Applies CreateContainer answers to one container's spec (see the module note)."""

    cid: str
    spec: dict[str, Any]
    owners: Owners
    cdi: CdiRegistry
    mounts_added: bool = False
    cdi_devices: list[str] = field(default_factory=list)

    def apply(self, plugin: str, adj: api.ContainerAdjustment) -> None:
        """Apply one plugin's adjustment (raises PluginError on a conflict or an unsupported field)."""
        process = self.spec.setdefault("process", {})
        linux = self.spec.setdefault("linux", {})
        self._keyed_map(plugin, "annotation", self.spec.setdefault("annotations", {}), dict(adj.annotations))
        self._mounts(plugin, adj.mounts)
        self._env(plugin, process, adj.env)
        if adj.args:
            args = list(adj.args)
            if args[0] == "":
                self.owners.clear(self.cid, "args", "", plugin)
                args = args[1:]
            if args:
                self.owners.claim(self.cid, "args", "", plugin)
                process["args"] = args
        self._hooks(adj.hooks)
        for r in adj.rlimits:
            self.owners.claim(self.cid, "rlimit", r.type, plugin)
            kept = [x for x in process.get("rlimits", []) if x["type"] != r.type]
            process["rlimits"] = [*kept, {"type": r.type, "hard": r.hard, "soft": r.soft}]
        for d in adj.CDI_devices:
            self.owners.claim(self.cid, "CDI device", d.name, plugin)
            self.cdi_devices.append(d.name)
        if adj.HasField("linux"):
            self._linux(plugin, process, linux, adj.linux)

    def finish(self) -> dict[str, Any]:
        """The adjusted spec: CDI devices resolved, mounts ordered parents first."""
        if self.cdi_devices:
            self.cdi.inject(self.spec, self.cdi_devices)
            self.mounts_added = True
        if self.mounts_added:
            self.spec["mounts"] = sorted(self.spec.get("mounts", []), key=_depth)
        return self.spec

    def _keyed_map(self, plugin: str, what: str, target: dict[str, str], changes: dict[str, str]) -> None:
        for raw in sorted(changes, key=lambda k: not k.startswith("-")):  # removals first
            key, removed = _removal(raw)
            if removed:
                self.owners.clear(self.cid, what, key, plugin)
                target.pop(key, None)
            else:
                self.owners.claim(self.cid, what, key, plugin)
                target[key] = changes[raw]

    def _mounts(self, plugin: str, mounts: Any) -> None:
        spec_mounts: list[dict[str, Any]] = self.spec.setdefault("mounts", [])
        for m in sorted(mounts, key=lambda m: not m.destination.startswith("-")):
            dest, removed = _removal(m.destination)
            spec_mounts[:] = [x for x in spec_mounts if x.get("destination") != dest]
            if removed:
                self.owners.clear(self.cid, "mount", dest, plugin)
                continue
            self.owners.claim(self.cid, "mount", dest, plugin)
            entry: dict[str, Any] = {"destination": dest, "type": m.type or "bind", "source": m.source}
            if m.options:
                entry["options"] = list(m.options)
            spec_mounts.append(entry)
            self.mounts_added = True

    def _env(self, plugin: str, process: dict[str, Any], env: Any) -> None:
        current: list[str] = process.setdefault("env", [])
        for kv in sorted(env, key=lambda kv: not kv.key.startswith("-")):
            name, removed = _removal(kv.key)
            current[:] = [e for e in current if e.split("=", 1)[0] != name]
            if removed:
                self.owners.clear(self.cid, "env", name, plugin)
            else:
                self.owners.claim(self.cid, "env", name, plugin)
                current.append(f"{name}={kv.value}")

    def _hooks(self, hooks: api.Hooks) -> None:
        spec_hooks = self.spec.get("hooks", {})
        for nri_field, key in convert.HOOK_KINDS:
            for h in getattr(hooks, nri_field):
                entry: dict[str, Any] = {"path": h.path}
                if h.args:
                    entry["args"] = list(h.args)
                if h.env:
                    entry["env"] = list(h.env)
                if h.HasField("timeout"):
                    entry["timeout"] = h.timeout.value
                spec_hooks.setdefault(key, []).append(entry)
        if spec_hooks:
            self.spec["hooks"] = spec_hooks

    def _linux(self, plugin: str, process: dict[str, Any], linux: dict[str, Any],
               adj: api.LinuxContainerAdjustment) -> None:
        # runc 1.1 (OCI runtime spec 1.0.2) ignores an I/O priority without a word: refused like the rest.
        for what, present in (("network devices", bool(adj.net_devices)),
                              ("a scheduler", adj.HasField("scheduler")), ("RDT", adj.HasField("rdt")),
                              ("a memory policy", adj.HasField("memory_policy")),
                              ("an I/O priority", adj.HasField("io_priority"))):
            if present:
                raise _unsupported(plugin, what)
        self._devices(plugin, linux, adj.devices)
        if adj.HasField("resources"):
            res = adj.resources
            if res.HasField("blockio_class") or res.HasField("rdt_class"):
                raise _unsupported(plugin, "a block I/O or RDT class")
            for name in convert.apply_resources(linux.setdefault("resources", {}), res):
                self.owners.claim(self.cid, "resources", name, plugin)
        if adj.cgroups_path:
            self.owners.claim(self.cid, "cgroups path", "", plugin)
            linux["cgroupsPath"] = adj.cgroups_path
        if adj.HasField("oom_score_adj"):
            self.owners.claim(self.cid, "OOM score adjustment", "", plugin)
            process["oomScoreAdj"] = adj.oom_score_adj.value
        if adj.HasField("seccomp_policy"):
            self.owners.claim(self.cid, "seccomp policy", "", plugin)
            linux["seccomp"] = seccomp_to_oci(adj.seccomp_policy)
        for ns in adj.namespaces:
            kind, removed = _removal(ns.type)
            self.owners.claim(self.cid, "namespace", kind, plugin)
            kept = [n for n in linux.get("namespaces", []) if n.get("type") != kind]
            if not removed:
                kept.append({"type": kind, "path": ns.path} if ns.path else {"type": kind})
            linux["namespaces"] = kept
        if adj.sysctl:
            self._keyed_map(plugin, "sysctl", linux.setdefault("sysctl", {}), dict(adj.sysctl))

    def _devices(self, plugin: str, linux: dict[str, Any], devices: Any) -> None:
        for d in sorted(devices, key=lambda d: not d.path.startswith("-")):
            path, removed = _removal(d.path)
            linux["devices"] = [x for x in linux.get("devices", []) if x.get("path") != path]
            if removed:
                self.owners.clear(self.cid, "device", path, plugin)
                continue
            self.owners.claim(self.cid, "device", path, plugin)
            node: dict[str, Any] = {"path": path, "type": d.type, "major": d.major, "minor": d.minor}
            for key, opt in (("fileMode", "file_mode"), ("uid", "uid"), ("gid", "gid")):
                if d.HasField(opt):
                    node[key] = getattr(d, opt).value
            linux["devices"].append(node)
            rules = linux.setdefault("resources", {}).setdefault("devices", [])
            rules.append({"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": "rwm"})


def seccomp_to_oci(policy: api.LinuxSeccomp) -> dict[str, Any]:
    """An NRI seccomp policy as OCI linux.seccomp."""
    out: dict[str, Any] = {"defaultAction": policy.default_action}
    if policy.HasField("default_errno"):
        out["defaultErrnoRet"] = policy.default_errno.value
    for key, value in (("architectures", list(policy.architectures)), ("flags", list(policy.flags)),
                       ("listenerPath", policy.listener_path),
                       ("listenerMetadata", policy.listener_metadata)):
        if value:
            out[key] = value
    syscalls = []
    for s in policy.syscalls:
        call: dict[str, Any] = {"names": list(s.names), "action": s.action}
        if s.HasField("errno_ret"):
            call["errnoRet"] = s.errno_ret.value
        if s.args:
            call["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op}
                            for a in s.args]
        syscalls.append(call)
    if syscalls:
        out["syscalls"] = syscalls
    return out


@dataclass(slots=True)
class Updates:
    """Resource updates and evictions plugins asked for during one event, merged per container.

    creating: the container being created, which must not be updated (its adjustment is the way);
    updating: the container being updated and its requested resources, which its updates modify.
    """

    owners: Owners
    creating: str = ""
    updating: str = ""
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    ignore_failure: dict[str, bool] = field(default_factory=dict)
    evictions: dict[str, str] = field(default_factory=dict)

    def add(self, plugin: str, updates: Any, evictions: Any = ()) -> None:
        for u in updates:
            cid = u.container_id
            if cid == self.creating:
                raise PluginError(f"NRI plugin {plugin!r} asked to update container {cid[:12]} while it is "
                                  "being created; it must adjust it instead")
            target = self.resources.setdefault(cid, {})
            self.ignore_failure[cid] = self.ignore_failure.get(cid, True) and u.ignore_failure
            if u.HasField("linux") and u.linux.HasField("resources"):
                res = u.linux.resources
                if res.HasField("blockio_class") or res.HasField("rdt_class"):
                    raise _unsupported(plugin, "a block I/O or RDT class")
                for name in convert.apply_resources(target, res):
                    self.owners.claim(cid, "resources", name, plugin)
        for e in evictions:
            reason = f"evicted by NRI plugin {plugin}" + (f": {e.reason}" if e.reason else "")
            self.evictions.setdefault(e.container_id, reason)

    def others(self) -> dict[str, dict[str, Any]]:
        """Updates to containers other than the one being updated."""
        return {cid: res for cid, res in self.resources.items() if cid != self.updating}


__all__ = ["Owners", "SpecAdjuster", "Updates", "seccomp_to_oci"]
