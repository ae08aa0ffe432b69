"""ID-mapped volumes of a user-namespaced pod's containers, made by crib because runc 1.1 cannot.

kubelet gives every volume of a pod with its own user namespace the pod's uid/gid mappings (CRI
Mount.uidMappings/gidMappings). For each such mount crib clones the host path's mount tree, ID-maps it
through the pod's pinned user namespace (system/idmap.py) and attaches it at
<bundle>/idmapped/<mount index>; the spec binds that instead of the host path. Through it the container's
root sees the volume's root-owned files as its own, and what it writes lands on disk with the ids a pod
without a user namespace would have written (root's files stay root's on the host).

The mounts go with the bundle (unmount_all on removal and as the undo of a failed create).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from crib import oci
from crib.errors import FailedPrecondition, NotFound
from crib.system import idmap, mount

DIR = "idmapped"


def mount_all(bundle: Path, config: Any, sandbox: oci.SandboxInfo) -> dict[int, str]:
    """ID-map the mounts that ask for it; index -> the path to bind. Blocking (run in a thread).

    The caller registers unmount_all(bundle) as the undo first.

    Raises:
        InvalidArgument: mappings the pod cannot honour (oci.idmapped_mounts).
        NotFound: a host path that does not exist.
        FailedPrecondition: a host path whose filesystem cannot be ID-mapped.
    """
    indexes = oci.idmapped_mounts(config, sandbox)
    if not indexes:
        return {}
    base = bundle / DIR
    base.mkdir(mode=0o711, exist_ok=True)
    name = config.metadata.name
    out: dict[int, str] = {}
    for index in indexes:
        host = config.mounts[index].host_path
        where = f"container {name!r}: mounts[{index}]"
        try:
            is_dir = os.path.isdir(host)
            os.stat(host)
        except OSError:
            raise NotFound(f"{where}: host_path {host} does not exist on the node; create it or fix "
                           "mounts[].host_path") from None
        target = base / str(index)
        if is_dir:
            target.mkdir(mode=0o755)
        else:
            target.touch(mode=0o644)
        try:
            tree = idmap.clone(host, sandbox.userns_path, recursive=True)
        except OSError as exc:
            raise FailedPrecondition(f"{where}: {host} cannot be mounted ID-mapped for the pod's user "
                                     f"namespace ({exc.strerror or exc}); its filesystem needs ID-mapped "
                                     "mount support") from exc
        try:
            idmap.attach(tree, target)
        finally:
            os.close(tree)
        out[index] = str(target)
    return out


def unmount_all(bundle: Path) -> None:
    """Detach every ID-mapped mount of a bundle (idempotent)."""
    try:
        entries = list(os.scandir(bundle / DIR))
    except FileNotFoundError:
        return
    for entry in entries:
        while mount.umount(entry.path, detach=True):
            pass


__all__ = ["DIR", "mount_all", "unmount_all"]
