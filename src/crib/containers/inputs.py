"""Everything the spec builder needs to know about the host for one container, found out safely.

The builder (crib.oci) is pure; this module does the reading: the image's /etc/passwd and /etc/group
(resolved inside the root filesystem, never following a symlink out of it), image VOLUME directories,
device nodes named by the request, the PID namespace of a target container, Localhost seccomp profiles.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crib.errors import FailedPrecondition, InvalidArgument, NotFound
from crib.oci import HostDevice
from crib.rootfs import overlay
from crib.rootfs.overlay import Rootfs
from crib.state.records import ContainerRecord

PROFILE_MAX = 1024 * 1024


def device(path: str) -> HostDevice | None:
    """The device node at path (following symlinks, as /dev/disk/by-* are), None if it is not one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return HostDevice(path=path, type=kind, major=os.major(st.st_rdev), minor=os.minor(st.st_rdev),
                      file_mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid)


def device_nodes(config: Any) -> dict[str, tuple[HostDevice, ...]]:
    """CRI Device.host_path -> its node, or every node under it for a directory; absent paths left out."""
    out: dict[str, tuple[HostDevice, ...]] = {}
    for dev in config.devices:
        host = dev.host_path
        if os.path.isdir(host):
            found = []
            for dirpath, _, names in os.walk(host):
                for name in sorted(names):
                    node = device(os.path.join(dirpath, name))
                    if node is not None:
                        found.append(node)
            out[host] = tuple(found)
        else:
            node = device(host)
            if node is not None:
                out[host] = (node,)
    return out


def host_devices(root: str = "/dev") -> tuple[HostDevice, ...]:
    """Every device node of the host for privileged containers (skipping what each container gets anew)."""
    skip = {os.path.join(root, d) for d in ("pts", "shm", "mqueue", "fd")}
    found = []
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            node = device(path)
            if node is not None:
                found.append(node)
    return tuple(found)


def volume_dirs(fs: Rootfs, paths: tuple[str, ...]) -> dict[str, str]:
    """Create one directory per image VOLUME path (seeded from the image); path -> host directory."""
    return {path: str(overlay.volume_dir(fs, path)) for path in paths}


def target_pid_ns(config: Any, containers: Mapping[str, ContainerRecord]) -> str:
    """For pid mode TARGET: the PID namespace of the running target container."""
    opts = config.linux.security_context.namespace_options
    if opts.pid != 3:  # NamespaceMode.TARGET
        return ""
    target = opts.target_id
    rec = containers.get(target) or next((c for c in containers.values() if c.id.startswith(target or "-")),
                                         None)
    if rec is None:
        raise NotFound(f"pid namespace target container {target!r} not found")
    if not rec.running or rec.pid <= 0:
        raise FailedPrecondition(f"pid namespace target container {target} is not running")
    return f"/proc/{rec.pid}/ns/pid"


def localhost_loader(profile_root: str) -> Any:
    """A load_localhost for the builder: reads a seccomp profile (JSON) by path."""

    def load(ref: str) -> dict[str, Any]:
        path = Path(ref) if ref.startswith("/") else Path(profile_root) / ref
        try:
            with open(path, "rb") as fh:
                raw = fh.read(PROFILE_MAX + 1)
        except FileNotFoundError:
            raise NotFound(f"seccomp profile {path} does not exist on the node; create it or fix "
                           "localhost_ref") from None
        except OSError as exc:
            raise InvalidArgument(f"seccomp profile {path} cannot be read: {exc.strerror}") from exc
        if len(raw) > PROFILE_MAX:
            raise InvalidArgument(f"seccomp profile {path} is larger than {PROFILE_MAX} bytes")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgument(f"seccomp profile {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidArgument(f"seccomp profile {path} must be a JSON object")
        return data

    return load


__all__ = ["device", "device_nodes", "host_devices", "localhost_loader", "target_pid_ns", "volume_dirs"]
