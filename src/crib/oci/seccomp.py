"""Seccomp: which profile a container gets, and rendering profile templates into linux.seccomp.

Design note. seccomp_default.json is crib's RuntimeDefault profile, written as a *template* in the format
Docker introduced and CRI-O also reads: an allow-list plus entries that apply only when the container holds a
capability (`includes.caps`: mount(2) with CAP_SYS_ADMIN, reboot(2) with CAP_SYS_BOOT ...), lacks one
(`excludes.caps`: clone(2) without namespace flags when CAP_SYS_ADMIN is absent), or runs on an architecture
(`includes.arches`), and an `archMap` naming the sub-architectures to filter too (x86 and x32 beside x86_64:
a 32-bit syscall is another way into the kernel). render_profile() turns such a template into the plain OCI
form for one container; an OCI-form profile passes through unchanged, so Localhost profiles in either format
work. Syscall names the host's libseccomp does not know are skipped by runc, so the list may name newer
syscalls than this kernel has.

Which profile (the CRI rules, as containerd applies them):
  privileged                           -> none (CRI: "Seccomp restrictions are not applied")
  `seccomp` field set                  -> its profile_type (RuntimeDefault, Unconfined, Localhost+ref)
  else seccomp_profile_path (deprecated): "runtime/default" | "docker/default" -> RuntimeDefault,
                                       "unconfined" -> Unconfined, "localhost/<path>" -> Localhost,
                                       "" -> none (critest: a nil profile is unconfined)
A host without seccomp refuses anything but unconfined, as containerd does: silently running a container
without the filter it asked for would remove a protection the user relies on.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Collection, Mapping
from importlib import resources
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument

RUNTIME_DEFAULT = api.SecurityProfile.RuntimeDefault
UNCONFINED = api.SecurityProfile.Unconfined
LOCALHOST = api.SecurityProfile.Localhost

LOCALHOST_PREFIX = "localhost/"

# Host machine names (GOARCH or uname -m) -> the names templates use in includes.arches and the
# libseccomp architecture of the archMap entry.
_ARCHES: dict[str, tuple[str, str]] = {
    "amd64": ("amd64", "SCMP_ARCH_X86_64"),
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "arm64": ("arm64", "SCMP_ARCH_AARCH64"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
}

# Keys of a template's syscall entry that are not part of the OCI form, and the names (copied apart).
_NOT_COPIED = frozenset({"comment", "includes", "excludes", "name", "names"})


def parse_profile_path(value: str, *, field: str, container: str) -> tuple[int, str] | None:
    """A deprecated "<kind>" profile string as (profile_type, localhost_ref); None for "".

    Shared by seccomp_profile_path and apparmor_profile, which use the same spellings.

    Raises:
        InvalidArgument: an unknown spelling.
    """
    if not value:
        return None
    if value in ("runtime/default", "docker/default"):
        return RUNTIME_DEFAULT, ""
    if value == "unconfined":
        return UNCONFINED, ""
    if value.startswith(LOCALHOST_PREFIX) and len(value) > len(LOCALHOST_PREFIX):
        return LOCALHOST, value[len(LOCALHOST_PREFIX):]
    raise InvalidArgument(f"container {container!r}: {field} {value!r} is not one of \"runtime/default\", "
                          "\"docker/default\", \"unconfined\" or \"localhost/<profile>\"")


@functools.cache
def _default_template() -> dict[str, Any]:
    text = resources.files("crib.oci").joinpath("seccomp_default.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def default_template() -> dict[str, Any]:
    """crib's RuntimeDefault template (a fresh copy)."""
    return copy.deepcopy(_default_template())


def _copy_json(value: Any) -> Any:
    # Profiles are shallow (lists of names, lists of flat arg objects); a full deepcopy costs more than the
    # rest of the spec together.
    if type(value) is list:
        if all(type(item) is str for item in value):
            return list(value)
        return [dict(item) if type(item) is dict else copy.deepcopy(item) for item in value]
    return value if type(value) in (str, int, float, bool) else copy.deepcopy(value)


def _applies(entry: Mapping[str, Any], caps: Collection[str], arch: str) -> bool:
    includes = entry.get("includes") or {}
    excludes = entry.get("excludes") or {}
    if not all(cap in caps for cap in includes.get("caps", ())):
        return False
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if any(cap in caps for cap in excludes.get("caps", ())):
        return False
    return not (excludes.get("arches") and arch in excludes["arches"])


def render_profile(
    template: Mapping[str, Any], *, capabilities: Collection[str], arch: str,
) -> dict[str, Any]:
    """The OCI linux.seccomp object of a profile template for one container.

    Args:
        template: a Docker-format template or an OCI LinuxSeccomp object.
        capabilities: the container's bounding capabilities ("CAP_SYS_ADMIN", ...).
        arch: the host machine (see HostFacts.arch).

    Raises:
        InvalidArgument: the template is not an object with a defaultAction and a list of syscalls.
    """
    if not isinstance(template, Mapping) or not isinstance(template.get("defaultAction"), str):
        raise InvalidArgument("seccomp profile must be a JSON object with a \"defaultAction\" string")
    calls = template.get("syscalls") or []
    if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
        raise InvalidArgument("seccomp profile \"syscalls\" must be a list of objects")
    arch_name, scmp_arch = _ARCHES.get(arch, (arch, ""))
    out: dict[str, Any] = {"defaultAction": template["defaultAction"]}
    for key in ("defaultErrnoRet", "flags", "listenerPath", "listenerMetadata"):
        if key in template:
            out[key] = copy.deepcopy(template[key])
    if template.get("architectures"):
        out["architectures"] = list(template["architectures"])
    else:
        for item in template.get("archMap") or ():
            if item.get("architecture") == scmp_arch:
                out["architectures"] = [scmp_arch, *item.get("subArchitectures", ())]
    syscalls = []
    for entry in calls:
        if not _applies(entry, capabilities, arch_name):
            continue
        names = list(entry.get("names") or ([entry["name"]] if entry.get("name") else []))
        if not names:
            continue
        rendered = {k: _copy_json(v) for k, v in entry.items() if k not in _NOT_COPIED}
        rendered["names"] = names
        if not rendered.get("args"):
            rendered.pop("args", None)
        syscalls.append(rendered)
    out["syscalls"] = syscalls
    return out


def container_seccomp(
    sc: api.LinuxContainerSecurityContext,
    *,
    container: str,
    privileged: bool,
    capabilities: Collection[str],
    arch: str,
    seccomp_enabled: bool,
    load_localhost: Callable[[str], dict[str, Any]],
) -> dict[str, Any] | None:
    """The container's linux.seccomp, or None for no filter (see the module note for the rules).

    Raises:
        InvalidArgument: an unknown deprecated string, a Localhost profile without a ref (or a ref on
            another type), a filter asked for on a host without seccomp, a malformed Localhost profile.
    """
    if privileged:
        return None
    kind: int
    if sc.HasField("seccomp"):
        kind, ref = sc.seccomp.profile_type, sc.seccomp.localhost_ref
        if kind != LOCALHOST and ref:
            raise InvalidArgument(f"container {container!r}: seccomp.localhost_ref is only valid with "
                                  "profile_type Localhost")
    else:
        parsed = parse_profile_path(sc.seccomp_profile_path, field="seccomp_profile_path",
                                    container=container)
        if parsed is None:
            return None
        kind, ref = parsed
    if kind == UNCONFINED:
        return None
    if not seccomp_enabled:
        raise InvalidArgument(f"container {container!r}: seccomp is not supported on this host; use an "
                              "Unconfined seccomp profile")
    if kind == RUNTIME_DEFAULT:
        return render_profile(_default_template(), capabilities=capabilities, arch=arch)
    if kind != LOCALHOST:
        raise InvalidArgument(f"container {container!r}: unknown seccomp profile_type {kind}")
    ref = ref.removeprefix(LOCALHOST_PREFIX)
    if not ref:
        raise InvalidArgument(f"container {container!r}: seccomp profile_type Localhost needs a "
                              "localhost_ref")
    profile = load_localhost(ref)
    try:
        return render_profile(profile, capabilities=capabilities, arch=arch)
    except InvalidArgument as exc:
        raise InvalidArgument(f"container {container!r}: seccomp profile {ref}: {exc}") from exc


__all__ = [
    "container_seccomp",
    "default_template",
    "parse_profile_path",
    "render_profile",
]
