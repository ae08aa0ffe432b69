"""A container's root filesystem: an overlay of the image's unpacked layers and its own writable layer.

    lowerdir = the image's layers (read-only, shared by every container of the image)
    upperdir, workdir = <root>/containers/<id>/{upper,work} (persistent: survives a daemon restart)
    mount point = <runroot>/containers/<id>/rootfs

The writable layer's size is what stats report as the container's filesystem usage. Image VOLUMEs get a
directory of their own under <root>/containers/<id>/volumes/, seeded with the image's content there.

In a user-namespaced pod the lower layers are ID-mapped mounts (system/idmap.py) through the pod's user
namespace, so the image's root-owned files show as the pod's root without a copy or a chown; the upper
directory (which overlayfs cannot take ID-mapped) starts empty and owned by the pod's root on the host, and
what the container writes there is stored with its host ids. Image layers are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from crib.system import idmap, mount, safeopen


@dataclass(frozen=True, slots=True, kw_only=True)
class Rootfs:
    """Where one container's root filesystem lives."""

    data: Path  # <root>/containers/<id>
    target: Path  # <bundle>/rootfs

    @property
    def upper(self) -> Path:
        return self.data / "upper"

    @property
    def work(self) -> Path:
        return self.data / "work"

    @property
    def volumes(self) -> Path:
        return self.data / "volumes"


def prepare(fs: Rootfs) -> None:
    """Create the writable layer's directories and the mount point."""
    fs.data.mkdir(parents=True, mode=0o700)
    fs.upper.mkdir(mode=0o755)
    fs.work.mkdir(mode=0o700)
    fs.target.mkdir(parents=True, mode=0o755)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdMapping:
    """A user-namespaced pod's view: its pinned user namespace, and the host uid/gid of its root."""

    userns: str
    root_uid: int
    root_gid: int


def mount_rootfs(fs: Rootfs, layers: list[Path], idmapping: IdMapping | None = None) -> None:
    """Mount the overlay (layers lowest first); an image with no layers gets an empty lower dir."""
    if not layers:
        empty = fs.data / "empty"
        empty.mkdir(exist_ok=True)
        layers = [empty]
    if idmapping is None:
        mount.overlay(fs.target, lower=layers, upper=fs.upper, work=fs.work)
        return
    os.chown(fs.upper, idmapping.root_uid, idmapping.root_gid)
    with idmap.mapped_paths(layers, idmapping.userns) as lower:
        mount.overlay(fs.target, lower=lower, upper=fs.upper, work=fs.work)


def mount_image(target: Path, layers: list[Path], empty: Path,
                idmapping: IdMapping | None = None) -> None:
    """Mount an image's layers (lowest first) read-only at target, with no writable layer (image volumes).

    overlayfs wants two lower dirs when there is no upper one, so an empty directory goes at the bottom;
    an image with no layers is that empty directory, bound read-only.
    """
    empty.mkdir(exist_ok=True, mode=0o755)
    if not layers:
        mount.bind(empty, target, readonly=True)
        return
    if idmapping is None:
        mount.overlay(target, lower=[empty, *layers], upper=None, work=None, readonly=True)
        return
    with idmap.mapped_paths([empty, *layers], idmapping.userns) as mapped:
        mount.overlay(target, lower=mapped, upper=None, work=None, readonly=True)


def unmount_rootfs(fs: Rootfs) -> None:
    mount.umount_all(fs.target)


def remove(fs: Rootfs) -> None:
    """Unmount and delete everything of the container's root filesystem (idempotent)."""
    unmount_rootfs(fs)
    shutil.rmtree(fs.target, ignore_errors=True)
    _rmtree_writable(fs.data)


def _rmtree_writable(path: Path) -> None:
    # overlay's workdir keeps a d--------- "work" subdirectory that rmtree cannot enter until chmod-ed.
    if not path.exists():
        return

    def fix(func: object, p: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(p, 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)

    shutil.rmtree(path, onerror=fix)


def read_file(fs: Rootfs, path: str) -> str:
    """A text file of the mounted root filesystem, resolved inside it ("" when absent)."""
    return safeopen.read_in_root(fs.target, path)


def volume_dir(fs: Rootfs, container_path: str) -> Path:
    """Create the directory for an image VOLUME, seeded with the image's content at that path."""
    name = hashlib.sha256(container_path.encode()).hexdigest()[:16]
    dest = fs.volumes / name
    dest.mkdir(parents=True, mode=0o755)
    try:
        fd = safeopen.open_in_root(fs.target, container_path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return dest  # nothing there in the image: an empty volume
    try:
        st = os.fstat(fd)
        os.chown(dest, st.st_uid, st.st_gid)
        os.chmod(dest, st.st_mode & 0o7777)
        shutil.copytree(f"/proc/self/fd/{fd}", dest, symlinks=True, dirs_exist_ok=True)
    finally:
        os.close(fd)
    return dest


def usage(fs: Rootfs) -> tuple[int, int]:
    """(bytes, inodes) of the writable layer (and the volumes), counting each hard-linked inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for base in (fs.upper, fs.volumes):
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
    return total, len(seen)


__all__ = ["IdMapping", "Rootfs", "mount_image", "mount_rootfs", "prepare", "read_file", "remove",
           "unmount_rootfs", "usage", "volume_dir"]
