"""Open files inside a container's root filesystem without ever leaving it.

An image is untrusted input: its /etc/passwd may be a symlink to /etc/shadow of the host, and a VOLUME
path may traverse a symlink to `/`. openat2(2) with RESOLVE_IN_ROOT resolves every component (symlinks
and ".." included) as if the root filesystem were `/`, atomically, in the kernel (Linux >= 5.6), so no
user-space path walk can be raced.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import stat

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "ppc64le": 437, "s390x": 437, "riscv64": 437}
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root: str | os.PathLike[str], path: str, flags: int = os.O_RDONLY) -> int:
    """An fd for path (absolute or relative) resolved inside root; raises OSError (ENOENT, ELOOP, ...)."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = _OpenHow(flags=flags | os.O_CLOEXEC, mode=0, resolve=RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        number = _SYS_OPENAT2.get(platform.machine(), 437)
        fd = _libc.syscall(number, root_fd, os.fsencode(path.lstrip("/") or "."), ctypes.byref(how),
                           ctypes.sizeof(how))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{path} in {root}: {os.strerror(err)}")
        return int(fd)
    finally:
        os.close(root_fd)


def read_in_root(root: str | os.PathLike[str], path: str, limit: int = 4 * 1024 * 1024) -> str:
    """A text file inside root ("" if it does not exist or is not a regular file), at most limit bytes."""
    try:
        fd = open_in_root(root, path)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, limit).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


__all__ = ["open_in_root", "read_in_root"]
