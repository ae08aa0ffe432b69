"""ID-mapped mounts: open_tree(2) + mount_setattr(2) with MOUNT_ATTR_IDMAP, through ctypes.

A user-namespaced pod must see the image's files (owned by 0 on disk) as owned by its own root, and write
its volumes as the ids a pod without a user namespace would. An ID-mapped mount does that without touching
a single inode: through it, a file of on-disk uid d shows as the host uid the pod's user namespace maps d
to (container uid d), and a write by container uid c lands on disk as uid c. runc 1.1 cannot make them
(OCI mount uidMappings came with runc 1.2), so crib makes them itself, from the host, before runc runs:

* a clone of a directory tree (open_tree OPEN_TREE_CLONE) is a detached mount; mount_setattr gives it the
  ID mapping of a user namespace (here the pod's own, pinned) -- the mapping is copied, so the mount stays
  valid after the namespace is gone;
* the detached mount is used by name, `/proc/self/fd/<n>`, as an overlayfs lower layer (overlayfs keeps
  its own reference, and the fd is closed right after mount(2)), or attached to a path with move_mount(2)
  for runc to bind (a CRI volume).

overlayfs on this kernel takes ID-mapped lower layers but refuses to be ID-mapped itself, and its upper
layer must not be ID-mapped (overlayfs creates its work files with the mounter's credentials, host root,
which an ID mapping cannot represent); a user-namespaced container's upper directory is therefore owned by
the pod's root on the host instead (see rootfs/overlay.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
from collections.abc import Iterator
from pathlib import Path

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000

# The "new mount API" syscalls have one number on every architecture (unified table since 5.x).
_NR = {"open_tree": 428, "move_mount": 429, "mount_setattr": 442}
_SUPPORTED_MACHINES = {"x86_64", "aarch64", "ppc64le", "s390x", "riscv64"}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class IdmapError(OSError):
    """An ID-mapped mount could not be made; the message names the call, the path and the kernel's reason."""


def _fail(what: str, path: str | os.PathLike[str]) -> IdmapError:
    err = ctypes.get_errno()
    return IdmapError(err, f"{what} {path}: {os.strerror(err)}")


def clone(path: str | os.PathLike[str], userns: str | os.PathLike[str], *, recursive: bool = False) -> int:
    """A detached, ID-mapped clone of the mount tree at path (an fd the caller closes).

    Args:
        path: a directory or file on a filesystem that supports ID-mapped mounts (ext4, xfs, btrfs, tmpfs
            from Linux 6.3, ...).
        userns: a user namespace file (a pinned /proc/<pid>/ns/user) whose mapping the mount gets.
        recursive: clone and map the mounts below path too (a CRI volume may have submounts).

    Raises:
        IdmapError: the kernel refused (EINVAL: the filesystem cannot be ID-mapped; EPERM, ENOENT, ...).
    """
    if platform.machine() not in _SUPPORTED_MACHINES:
        raise IdmapError(0, f"ID-mapped mounts are not wired for {platform.machine()}")
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = _libc.syscall(_NR["open_tree"], AT_FDCWD, os.fsencode(path), flags)
    if tree < 0:
        raise _fail("open_tree", path)
    try:
        ns_fd = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(tree)
        raise
    try:
        attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP, attr_clr=0, propagation=0, userns_fd=ns_fd)
        at = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
        done = _libc.syscall(_NR["mount_setattr"], tree, b"", at, ctypes.byref(attr), ctypes.sizeof(attr))
        if done != 0:
            raise _fail("mount_setattr(MOUNT_ATTR_IDMAP)", path)
    except BaseException:
        os.close(tree)
        raise
    finally:
        os.close(ns_fd)
    return int(tree)


def attach(tree: int, target: str | os.PathLike[str]) -> None:
    """move_mount a detached tree (from clone) onto an existing file or directory."""
    if _libc.syscall(_NR["move_mount"], tree, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH):
        raise _fail("move_mount onto", target)


@contextlib.contextmanager
def mapped_paths(paths: list[Path], userns: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """ID-mapped clones of paths, named `/proc/self/fd/<n>`, valid inside the block (for mount(2) options).

    The fds are closed on exit: whatever mounted them (overlayfs) holds its own references by then.
    """
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(clone(path, userns))
        yield [Path(f"/proc/self/fd/{fd}") for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


def probe(path: str | os.PathLike[str], userns: str | os.PathLike[str]) -> str:
    """"" when an ID-mapped mount of path works, else the reason it does not (for Status)."""
    try:
        os.close(clone(path, userns))
    except OSError as exc:
        return str(exc)
    return ""


__all__ = ["IdmapError", "attach", "clone", "mapped_paths", "probe"]
