"""Learn that a process ended, for processes crib did not start and cannot wait for: pidfds on the loop.

conmon double-forks, so the daemon is never the parent of a container's monitor (nor of the container),
and a killed conmon leaves no exit file behind. A pidfd (pidfd_open(2), Linux 5.3) becomes readable the
moment its process exits, zombie or not, parent or not: one fd per watched process, no polling, no SIGCHLD.

A pidfd names one process for its whole life, so once opened it cannot be fooled by pid reuse; the
window before opening it can, so the caller checks that the pid still is the process it means right after
watch() (conmon's command line names the container; runc state checks the start time of its pid).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable


class ProcessWatch:
    """Calls on_gone(key) once when the process watched under key ends (see the module note).

    Keys are the caller's (container ids); watching a key again replaces its process. Must be used on the
    event loop's thread.
    """

    def __init__(self, on_gone: Callable[[str], None]) -> None:
        self._on_gone = on_gone
        self._fds: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, key: str, pid: int) -> bool:
        """Watch pid under key; False when the process is already gone (on_gone is not called then)."""
        self.forget(key)
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        self._loop = asyncio.get_running_loop()
        self._fds[key] = fd
        self._loop.add_reader(fd, self._ended, key, fd)
        return True

    def _ended(self, key: str, fd: int) -> None:
        if self._fds.get(key) != fd:
            return
        self.forget(key)
        self._on_gone(key)

    def forget(self, key: str) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(fd)
            os.close(fd)

    def watching(self, key: str) -> bool:
        return key in self._fds

    def close(self) -> None:
        for key in list(self._fds):
            self.forget(key)


__all__ = ["ProcessWatch"]
