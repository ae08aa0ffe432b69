"""mount(2) and umount2(2) through ctypes.

Why not mount(8): a pod and a container need several mounts each (overlay root, /dev/shm, pinned
namespaces), and an exec per mount costs milliseconds that show up in RunPodSandbox and CreateContainer.
The syscalls take a few microseconds and report errno precisely.

Everything here is blocking but fast; callers on the event loop may call it directly. Overlay mounts with
many layers can take longer (the kernel opens every lower dir), so callers run those in a thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20

MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class MountError(OSError):
    """A mount syscall failed; the message names the call and its arguments."""


def _enc(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | os.PathLike[str] | None, target: str | os.PathLike[str], fstype: str | None,
          flags: int = 0, data: str | None = None) -> None:
    """mount(2). Raises MountError (an OSError with errno) naming what was asked."""
    raw = _enc(data)
    if _libc.mount(_enc(source), _enc(target), _enc(fstype), flags, raw) != 0:
        err = ctypes.get_errno()
        shown = (data or "")[:300]
        raise MountError(err, f"mount {fstype or 'bind'} {source} on {target} (flags {flags:#x}"
                              f"{', ' + shown if shown else ''}): {os.strerror(err)}")


def umount(target: str | os.PathLike[str], *, detach: bool = False, missing_ok: bool = True) -> bool:
    """umount2(2); returns whether something was unmounted.

    Not-mounted (EINVAL) and missing (ENOENT) count as done when missing_ok: undo steps run after
    partial failures and on restart, and must be idempotent.
    """
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if detach else 0)
    if _libc.umount2(_enc(target), flags) == 0:
        return True
    err = ctypes.get_errno()
    if missing_ok and err in (errno.EINVAL, errno.ENOENT):
        return False
    raise MountError(err, f"umount {target}: {os.strerror(err)}")


def umount_all(target: str | os.PathLike[str]) -> int:
    """Unmount target until nothing is mounted there (mounts may be stacked); returns how many."""
    count = 0
    while count < 64 and umount(target):
        count += 1
    return count


def bind(source: str | os.PathLike[str], target: str | os.PathLike[str], *, readonly: bool = False,
         recursive: bool = False) -> None:
    """Bind-mount source on target; read-only needs a second (remount) call, as the kernel requires."""
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        try:
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        except OSError:
            umount(target, detach=True)
            raise


def tmpfs(target: str | os.PathLike[str], *, size: int, mode: int = 0o1777, flags: int = 0,
          owner: tuple[int, int] | None = None) -> None:
    """A tmpfs of at most size bytes (e.g. a pod's /dev/shm); owner = (uid, gid) of its root directory."""
    data = f"mode={mode:o},size={size}" + (f",uid={owner[0]},gid={owner[1]}" if owner is not None else "")
    mount("shm", target, "tmpfs", flags, data)


def overlay(target: str | os.PathLike[str], *, lower: list[Path], upper: Path | None, work: Path | None,
            readonly: bool = False) -> None:
    """An overlay of lower dirs (given lowest first, as the image service lists them).

    overlayfs wants the topmost lower dir first. Mount options are limited to a page (4096 bytes); for
    long layer lists the caller should pass short paths (crib's layer paths are root-relative and short
    enough for about 50 layers).
    """
    opts = ["lowerdir=" + ":".join(str(p) for p in reversed(lower))]
    if upper is not None and work is not None:
        opts += [f"upperdir={upper}", f"workdir={work}"]
    opts.append("index=off")
    data = ",".join(opts)
    if len(data) >= 4096:
        raise MountError(errno.E2BIG, f"overlay options for {target} are {len(data)} bytes, over the "
                                      "kernel's one-page limit; the image has too many layers")
    mount("overlay", target, "overlay", MS_RDONLY if readonly else 0, data)


def mountpoints() -> set[str]:
    """Every mount point of this mount namespace."""
    out: set[str] = set()
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            point = line.split()[4]
            out.add(point.decode("unicode_escape") if b"\\" in point else point.decode())
    return out


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path) in mountpoints()


def propagation(path: str | os.PathLike[str]) -> tuple[str, frozenset[str]]:
    """The mount point holding path and its propagation ({"shared"}, {"slave"}, both, or empty)."""
    real = os.path.realpath(path)
    best, kinds = "/", frozenset[str]()
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left = line.split(" - ", 1)[0].split()
            point = left[4].encode().decode("unicode_escape") if "\\" in left[4] else left[4]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best = point
                kinds = frozenset({"shared" if f.startswith("shared:") else "slave"
                                   for f in left[6:] if f.startswith(("shared:", "master:"))})
    return best, kinds


def make_private(path: str | os.PathLike[str]) -> None:
    """Make path a private mount point (bind it on itself first if it is not one)."""
    if not is_mountpoint(path):
        bind(path, path)
    with contextlib.suppress(OSError):
        mount(None, path, None, MS_PRIVATE)


__all__ = [
    "MS_BIND", "MS_NODEV", "MS_NOEXEC", "MS_NOSUID", "MS_PRIVATE", "MS_RDONLY", "MS_REC", "MS_REMOUNT",
    "MS_SHARED", "MS_SLAVE", "MountError", "bind", "is_mountpoint", "make_private", "mount", "mountpoints",
    "overlay", "propagation", "tmpfs", "umount", "umount_all",
]
