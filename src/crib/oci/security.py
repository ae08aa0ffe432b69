"""Capabilities, AppArmor, masked and read-only paths of a container.

Capabilities follow containerd and CRI-O: start from the 14 defaults (all the daemon holds when privileged),
apply "ALL" adds/drops first, then the named ones, so {add: [ALL], drop: [CHOWN]} means everything but
CAP_CHOWN. Names come without the CAP_ prefix from kubelet; either spelling is accepted, case-insensitively.
Added capabilities go to the bounding, effective and permitted sets. The CRI comment says inheritable too, but
neither containerd nor CRI-O does that by default (CVE-2022-27652: a non-root exec'd binary with file
capabilities would gain them), and crib keeps their behaviour. add_ambient_capabilities go to all five sets,
which the kernel requires for an ambient capability to survive execve.

AppArmor (crib's choice, between CRI-O's and containerd's):
  privileged                   -> none (CRI: "AppArmor confinement is not applied")
  host without AppArmor        -> RuntimeDefault and Unconfined are accepted and mean "no profile" (the
                                  runtime's default on such a host is none, as on CRI-O); a Localhost profile
                                  is refused, because the user asked for a confinement crib cannot give
  host with AppArmor           -> RuntimeDefault (also when unset) = HostFacts.apparmor_default_profile,
                                  Localhost = the named profile (refused when known not to be loaded),
                                  Unconfined = none
The deprecated apparmor_profile string is read when the `apparmor` field is unset.

Masked and read-only paths: a non-empty CRI list replaces crib's default list; an empty one gives the
defaults. Proto3 cannot tell an empty list from an absent one, and kubelet always sends its defaults
except for ProcMount "Unmasked", which it only allows together with a user namespace; crib refuses user
namespaces, so an empty list here always means "nothing said". Privileged containers get none.
"""

from __future__ import annotations

from collections.abc import Collection

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import defaults
from crib.oci.seccomp import LOCALHOST, LOCALHOST_PREFIX, RUNTIME_DEFAULT, UNCONFINED, parse_profile_path

_KNOWN = frozenset(defaults.ALL_CAPABILITIES)


def _cap_name(raw: str, *, field: str, container: str) -> str:
    name = raw.strip().upper()
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in _KNOWN:
        raise InvalidArgument(f"container {container!r}: capabilities.{field} names unknown capability "
                              f"{raw!r}; use a Linux capability name such as NET_ADMIN")
    return name


def _is_all(raw: str) -> bool:
    return raw.strip().upper() == "ALL"


def capabilities(
    caps: api.Capability, *, container: str, privileged: bool, available: Collection[str],
) -> dict[str, list[str]]:
    """process.capabilities for a container.

    Args:
        caps: LinuxContainerSecurityContext.capabilities (an empty message when unset).
        container: the container's name, for error messages.
        privileged: start from every available capability instead of the defaults.
        available: the capabilities the daemon holds (HostFacts.capabilities); runc can grant no more.

    Raises:
        InvalidArgument: an unknown capability name, or one the daemon does not hold.
    """
    order = {name: i for i, name in enumerate(defaults.ALL_CAPABILITIES)}
    base = set(available) if privileged else set(defaults.DEFAULT_CAPABILITIES) & set(available)
    adds = list(caps.add_capabilities)
    drops = list(caps.drop_capabilities)
    if any(_is_all(c) for c in adds):
        base = set(available)
    if any(_is_all(c) for c in drops):
        base = set()
    ambient: set[str] = set()
    requested = [(c, "add_capabilities") for c in adds if not _is_all(c)]
    requested += [(c, "add_ambient_capabilities") for c in caps.add_ambient_capabilities]
    for raw, field in requested:
        name = _cap_name(raw, field=field, container=container)
        if name not in available:
            raise InvalidArgument(f"container {container!r}: capabilities.{field} asks for {name}, which "
                                  "crib itself lacks on this host, so runc cannot grant it; remove it")
        base.add(name)
        if field == "add_ambient_capabilities":
            ambient.add(name)
    for raw in drops:
        if not _is_all(raw):
            name = _cap_name(raw, field="drop_capabilities", container=container)
            base.discard(name)
            ambient.discard(name)
    granted = sorted(base, key=order.__getitem__)
    amb = sorted(ambient, key=order.__getitem__)
    return {"bounding": granted, "effective": list(granted), "permitted": list(granted),
            "inheritable": list(amb), "ambient": amb}


def apparmor_profile(
    sc: api.LinuxContainerSecurityContext,
    *,
    container: str,
    privileged: bool,
    enabled: bool,
    default_profile: str,
    loaded: frozenset[str] | None,
) -> str:
    """process.apparmorProfile for a container; "" = leave it unset (see the module note).

    Raises:
        InvalidArgument: a Localhost profile on a host without AppArmor, a profile known not to be loaded,
            a malformed deprecated string, a localhost_ref on another type.
    """
    if privileged:
        return ""
    kind: int
    if sc.HasField("apparmor"):
        kind, ref = sc.apparmor.profile_type, sc.apparmor.localhost_ref
        if kind != LOCALHOST and ref:
            raise InvalidArgument(f"container {container!r}: apparmor.localhost_ref is only valid with "
                                  "profile_type Localhost")
    else:
        parsed = parse_profile_path(sc.apparmor_profile, field="apparmor_profile", container=container)
        kind, ref = parsed if parsed is not None else (RUNTIME_DEFAULT, "")
    if kind == UNCONFINED:
        return ""
    if kind == RUNTIME_DEFAULT:
        return default_profile if enabled else ""
    if kind != LOCALHOST:
        raise InvalidArgument(f"container {container!r}: unknown apparmor profile_type {kind}")
    name = ref.removeprefix(LOCALHOST_PREFIX)
    if not name:
        raise InvalidArgument(f"container {container!r}: apparmor profile_type Localhost needs a "
                              "localhost_ref")
    if not enabled:
        raise InvalidArgument(f"container {container!r}: AppArmor is not enabled on this host, so profile "
                              f"{name!r} cannot be applied; use RuntimeDefault or Unconfined")
    if loaded is not None and name not in loaded:
        raise InvalidArgument(f"container {container!r}: AppArmor profile {name!r} is not loaded on this "
                              "host; load it (apparmor_parser) or name a loaded one")
    return name


def masked_and_readonly_paths(
    sc: api.LinuxContainerSecurityContext, *, container: str, privileged: bool,
) -> tuple[list[str], list[str]]:
    """linux.maskedPaths and linux.readonlyPaths (see the module note).

    Raises:
        InvalidArgument: a relative path.
    """
    if privileged:
        return [], []
    for field, paths in (("masked_paths", sc.masked_paths), ("readonly_paths", sc.readonly_paths)):
        for path in paths:
            if not path.startswith("/"):
                raise InvalidArgument(f"container {container!r}: {field} entry {path!r} must be an absolute "
                                      "path")
    masked = list(sc.masked_paths) or list(defaults.DEFAULT_MASKED_PATHS)
    readonly = list(sc.readonly_paths) or list(defaults.DEFAULT_READONLY_PATHS)
    return masked, readonly


__all__ = ["apparmor_profile", "capabilities", "masked_and_readonly_paths"]
