"""CDI (Container Device Interface) devices that NRI plugins inject, resolved into OCI spec edits.

A CDI spec file (JSON or YAML, in the configured directories; a later directory wins for the same device)
declares `kind: vendor.com/class` and named devices, each with `containerEdits` (env, deviceNodes,
mounts, hooks, additionalGIDs), plus spec-wide `containerEdits` applied once whenever any of its devices
is injected. A plugin names a device fully qualified: `vendor.com/class=name`.

Specs are read when a plugin injects a device, not kept: injection is rare and specs change under us
(device plugins rewrite /var/run/cdi). A device node's type and numbers come from the spec, else from a
stat of its host path.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crib.errors import PluginError

_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class _Device:
    edits: dict[str, Any]
    spec_edits: dict[str, Any]
    source: str  # the spec file, for errors and to apply its spec-wide edits once


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml  # lazily: only a YAML CDI spec needs it

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("not a mapping")
    return data


class CdiRegistry:
    """CDI specs under dirs (see the module note)."""

    def __init__(self, dirs: Iterable[str]) -> None:
        self.dirs = [Path(d) for d in dirs]

    def devices(self) -> dict[str, _Device]:
        found: dict[str, _Device] = {}
        for d in self.dirs:
            if not d.is_dir():
                continue
            for path in sorted(p for p in d.iterdir() if p.suffix in _SUFFIXES):
                try:
                    data = _load(path)
                    kind = str(data["kind"])
                    for dev in data.get("devices") or []:
                        found[f"{kind}={dev['name']}"] = _Device(edits=dev.get("containerEdits") or {},
                                                                 spec_edits=data.get("containerEdits") or {},
                                                                 source=str(path))
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    raise PluginError(f"CDI spec {path} cannot be read ({exc}); fix or remove it") from exc
        return found

    def inject(self, spec: dict[str, Any], names: list[str]) -> None:
        """Apply the edits of the named devices (and their specs' common edits, once per spec) to spec.

        Raises:
            PluginError: a device no spec declares, or a device node that does not exist.
        """
        known = self.devices()
        applied_specs: set[str] = set()
        for name in names:
            dev = known.get(name)
            if dev is None:
                where = ", ".join(str(d) for d in self.dirs)
                raise PluginError(f"CDI device {name!r} is not declared by any CDI spec in {where}")
            if dev.source not in applied_specs:
                applied_specs.add(dev.source)
                _apply(spec, dev.spec_edits, name)
            _apply(spec, dev.edits, name)


def _apply(spec: dict[str, Any], edits: dict[str, Any], device: str) -> None:
    process = spec.setdefault("process", {})
    linux = spec.setdefault("linux", {})
    env: list[str] = process.setdefault("env", [])
    for item in edits.get("env") or []:
        name = str(item).split("=", 1)[0]
        env[:] = [e for e in env if e.split("=", 1)[0] != name]
        env.append(str(item))
    for node in edits.get("deviceNodes") or []:
        _device_node(linux, node, device)
    for m in edits.get("mounts") or []:
        options = list(m.get("options") or [])
        kind = m.get("type") or "bind"
        if kind == "bind" and not {"bind", "rbind"} & set(options):
            options.append("bind")
        spec.setdefault("mounts", []).append({"destination": m["containerPath"], "type": kind,
                                              "source": m["hostPath"], "options": options})
    for h in edits.get("hooks") or []:
        entry = {k: v for k, v in (("path", h["path"]), ("args", h.get("args")), ("env", h.get("env")),
                                   ("timeout", h.get("timeout"))) if v}
        spec.setdefault("hooks", {}).setdefault(h["hookName"], []).append(entry)
    gids = edits.get("additionalGIDs") or []
    if gids:
        user = process.setdefault("user", {})
        user["additionalGids"] = sorted(set(user.get("additionalGids", [])) | {int(g) for g in gids})


def _device_node(linux: dict[str, Any], node: dict[str, Any], device: str) -> None:
    path = node["path"]
    kind, major, minor = node.get("type"), node.get("major"), node.get("minor")
    if kind is None or major is None or minor is None:
        host = node.get("hostPath") or path
        try:
            st = os.stat(host)
        except OSError as exc:
            raise PluginError(f"CDI device {device!r}: device node {host} cannot be found "
                              f"({exc.strerror})") from exc
        kind = kind or ("b" if stat.S_ISBLK(st.st_mode) else "c")
        major = os.major(st.st_rdev) if major is None else major
        minor = os.minor(st.st_rdev) if minor is None else minor
    entry: dict[str, Any] = {"path": path, "type": kind, "major": major, "minor": minor}
    for key in ("fileMode", "uid", "gid"):
        if node.get(key) is not None:
            entry[key] = node[key]
    linux["devices"] = [*(d for d in linux.get("devices", []) if d.get("path") != path), entry]
    rules = linux.setdefault("resources", {}).setdefault("devices", [])
    rules.append({"allow": True, "type": kind, "major": major, "minor": minor,
                  "access": node.get("permissions") or "rwm"})


__all__ = ["CdiRegistry"]
