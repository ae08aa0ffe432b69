"""Noticing changes to the CNI conf dirs and plugin dirs: a stat fingerprint, polled.

Why polling and not inotify: the fingerprint of a few directories is a handful of stat calls (about
0.1 ms per poll on the reference machine for a conf dir and two plugin dirs, see bench/network_watch.py),
so once a second costs nothing measurable; it needs no ctypes, sees directories that do not exist yet
appear, covers plugin binaries being installed (which makes a waiting config valid), and survives a
directory being replaced. inotify would notice in milliseconds instead of within a second, which nothing
needs: kubelet polls Status every 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence

from crib import log

_log = log.get(__name__)

Fingerprint = tuple[tuple[str, int, int, int, int], ...]


def fingerprint(dirs: Sequence[str]) -> Fingerprint:
    """(path, inode, size, mtime_ns, mode) of each dir and each entry in it; missing dirs count as empty."""
    out: list[tuple[str, int, int, int, int]] = []
    for d in dirs:
        try:
            st = os.stat(d)
        except OSError:
            out.append((d, 0, 0, 0, 0))
            continue
        out.append((d, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode))
        try:
            with os.scandir(d) as entries:
                for entry in entries:
                    try:
                        est = entry.stat()  # follows symlinks: a re-pointed link is a change
                    except OSError:
                        continue
                    out.append((entry.path, est.st_ino, est.st_size, est.st_mtime_ns, est.st_mode))
        except OSError:
            continue
    out.sort()
    return tuple(out)


class Watcher:
    """Calls `on_change` whenever the fingerprint of `dirs` changes (checked every `interval` seconds)."""

    def __init__(self, dirs: Sequence[str], on_change: Callable[[], Awaitable[None]], *,
                 interval: float = 1.0, on_tick: Callable[[], Awaitable[None]] | None = None) -> None:
        self._dirs = list(dirs)
        self._on_change = on_change
        self._on_tick = on_tick
        self._interval = interval
        self._last: Fingerprint | None = None
        self._task: asyncio.Task[None] | None = None

    def mark_seen(self) -> None:
        """Record the current state as handled (after a load the caller did itself)."""
        self._last = fingerprint(self._dirs)

    async def poll_once(self) -> bool:
        """Check once; True when something changed and on_change ran."""
        now = await asyncio.to_thread(fingerprint, self._dirs)
        if now == self._last:
            return False
        self._last = now
        await self._on_change()
        return True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll_once()
                if self._on_tick is not None:
                    await self._on_tick()
            except Exception:  # the watcher must outlive any one bad reload
                _log.exception("CNI config reload failed")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="cni-conf-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


__all__ = ["Fingerprint", "Watcher", "fingerprint"]
