"""A minimal inotify binding for the event loop (ctypes; one watch per instance).

Used to learn about conmon's exit files the moment they appear instead of polling a directory: conmon
writes `<exit dir>/<container id>` with g_file_set_contents, i.e. a temporary file renamed into place, so
IN_MOVED_TO (and IN_CLOSE_WRITE, for writers that do not rename) carry the container id as the name.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import struct
from collections.abc import Callable
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_HEADER = struct.Struct("iIII")


class DirectoryWatch:
    """Calls on_name(name) for each file that lands in a directory; on_overflow() if events were lost."""

    def __init__(self, directory: Path, on_name: Callable[[str], None], on_overflow: Callable[[], None],
                 mask: int = IN_MOVED_TO | IN_CLOSE_WRITE) -> None:
        self._on_name = on_name
        self._on_overflow = on_overflow
        self._fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        if _libc.inotify_add_watch(self._fd, os.fsencode(directory), mask) < 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        pos = 0
        while pos + _HEADER.size <= len(data):
            _, mask, _, length = _HEADER.unpack_from(data, pos)
            raw = data[pos + _HEADER.size: pos + _HEADER.size + length]
            pos += _HEADER.size + length
            if mask & IN_Q_OVERFLOW:
                self._on_overflow()
                continue
            name = raw.split(b"\0", 1)[0].decode(errors="replace")
            if name:
                self._on_name(name)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


__all__ = ["IN_CLOSE_WRITE", "IN_CREATE", "IN_MOVED_TO", "DirectoryWatch"]
