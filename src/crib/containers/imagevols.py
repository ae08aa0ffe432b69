"""Image volumes (CRI Mount.image, KEP-4639): an image kubelet pulled, mounted read-only in a container.

    resolve the images (before anything is recorded: a missing image is NOT_FOUND, as for the container's
    own image) -> mount each one's layers read-only at <bundle>/image-volumes/<mount index> -> resolve
    image_sub_path inside that mount -> oci.mounts binds the result ("ro", "nosuid", "nodev")

image_sub_path is resolved with openat2(RESOLVE_IN_ROOT), the way /etc/passwd is read from a root
filesystem: a symlink in the image (`etc -> /`) resolves inside the image, never to the host. The path
handed to runc is then the kernel's own name of what was opened, which is inside the read-only mount,
where nothing can swap it afterwards.

The mounts live in the container's bundle and go with it (unmount_all on removal and as the undo of a
failed create). While the container exists its record names each image's id, and the image service
refuses to remove or prune an image a container uses (ContainerService.containers_using).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from crib import oci
from crib.containers.deps import ImageSource
from crib.errors import InvalidArgument, NotFound
from crib.rootfs import overlay
from crib.state.records import ImageRecord
from crib.system import mount, safeopen

DIR = "image-volumes"
_EMPTY = ".empty"


def resolve(images: ImageSource, config: Any) -> dict[int, ImageRecord]:
    """The local image of every image mount of config, by mount index.

    Raises:
        NotFound: an image the node does not have (kubelet pulls it first).
        InvalidArgument: a malformed image_sub_path.
    """
    name = config.metadata.name
    out: dict[int, ImageRecord] = {}
    for index, m in enumerate(config.mounts):
        if not oci.is_image_mount(m):
            continue
        ref = m.image.image or m.image.image_ref
        _check_sub_path(m.image_sub_path, f"container {name!r}: mounts[{index}].image_sub_path")
        try:
            out[index] = images.resolve(ref)
        except NotFound as exc:
            raise NotFound(f"container {name!r}: mounts[{index}] mounts image {ref}, which is not present on "
                           f"the node; pull it first ({exc})") from exc
    return out


def _check_sub_path(sub: str, where: str) -> None:
    if not sub:
        return
    if sub.startswith("/") or ".." in sub.split("/") or "\0" in sub:
        raise InvalidArgument(f"{where} {sub!r} must be a relative path inside the image without '..'")


def mount_all(images: ImageSource, bundle: Path, config: Any, resolved: dict[int, ImageRecord],
              idmapping: overlay.IdMapping | None = None) -> dict[int, str]:
    """Mount every resolved image under the bundle; index -> host path to bind. Blocking (run in a thread).

    The caller registers unmount_all(bundle) as the undo before calling: a failure half-way leaves mounts
    that it removes. idmapping: a user-namespaced pod's, so the image shows as owned by the pod's root.

    Raises:
        NotFound: an image_sub_path that does not exist in its image.
    """
    if not resolved:
        return {}
    base = bundle / DIR
    base.mkdir(mode=0o711, exist_ok=True)
    out: dict[int, str] = {}
    for index, image in sorted(resolved.items()):
        target = base / str(index)
        target.mkdir(mode=0o755)
        overlay.mount_image(target, images.layer_dirs(image), base / _EMPTY, idmapping)
        m = config.mounts[index]
        out[index] = _sub_path(target, m.image_sub_path, config.metadata.name, index, image)
    return out


def _sub_path(root: Path, sub: str, container: str, index: int, image: ImageRecord) -> str:
    if not sub:
        return str(root)
    try:
        fd = safeopen.open_in_root(root, sub, os.O_PATH)
    except OSError as exc:
        names = ", ".join(image.repo_tags[:1]) or image.id
        raise NotFound(f"container {container!r}: mounts[{index}].image_sub_path {sub!r} does not exist in "
                       f"image {names} ({exc.strerror}); fix image_sub_path") from None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    inside = posixpath.normpath(real)
    if inside != str(root) and not inside.startswith(str(root) + "/"):  # cannot happen with RESOLVE_IN_ROOT
        raise InvalidArgument(f"container {container!r}: mounts[{index}].image_sub_path {sub!r} leads out of "
                              "the image")
    return inside


def unmount_all(bundle: Path) -> None:
    """Unmount every image volume of a bundle (idempotent; the bundle's removal deletes the directories)."""
    base = bundle / DIR
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name != _EMPTY:
            mount.umount_all(entry.path)


__all__ = ["DIR", "mount_all", "resolve", "unmount_all"]
