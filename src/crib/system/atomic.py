"""Whole-file replacement for the files crib owns (specs, CNI cache entries, pod files, its conflist).

A crash or a full disk leaves either the old file or the new one, never half of the new. The new content
goes to `.<name>.tmp` beside the file and is renamed over it; a write that fails removes that temporary
file, and one a killed process left keeps that name, so the file's owner can recognise and sweep it
(network/cache.py does). Callers serialise writes to one path (the object's lock).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def temp_path(path: Path) -> Path:
    """Where the next content of path is written before the rename (a dot name: no reader takes it)."""
    return path.with_name(f".{path.name}.tmp")


def write_atomic(path: Path, data: bytes | str, *, mode: int = 0o644, owner: tuple[int, int] | None = None,
                 durable: bool = False) -> None:
    """Replace path with data; owner = (uid, gid) on the host (None: the daemon's); durable fsyncs the data
    before the rename, for files a restart must find (a rename alone may reach the disk first)."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # exactly mode, whatever the umask
            if owner is not None:
                os.fchown(fd, *owner)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


__all__ = ["temp_path", "write_atomic"]
