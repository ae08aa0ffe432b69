"""The exit watcher: conmon's exit files, turned into callbacks.

conmon writes `<exit dir>/<container id>` (the exit status as decimal text: WEXITSTATUS, or 128+signal)
when a container's process ends, whether crib is running or not. The watcher learns about new files
through inotify (system/inotify.py) the moment they are renamed into place; at start-up, and whenever
the kernel reports lost events, it rescans the directory. A file may be reported more than once;
handlers are idempotent.

Chosen over polling because a stop waits for this event: inotify delivers it within a millisecond at no
idle cost, while polling trades latency against wake-ups.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crib import ids, log
from crib.system.inotify import DirectoryWatch

_log = log.get(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exit:
    """One container exit: its status and when conmon recorded it (the exit file's mtime)."""

    cid: str
    code: int
    at_ns: int


def read_exit(exit_dir: Path, cid: str) -> Exit | None:
    """The exit recorded for cid, None if there is none (yet)."""
    path = exit_dir / cid
    try:
        text = path.read_text().strip()
        at = path.stat().st_mtime_ns
    except OSError:
        return None
    try:
        code = int(text)
    except ValueError:
        code = 255  # conmon writes -1 when it could not tell (timed-out exec); never for containers
    return Exit(cid=cid, code=code if code >= 0 else 255, at_ns=at)


def forget(exit_dir: Path, cid: str) -> None:
    """Remove cid's exit file (when the container is removed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(exit_dir / cid)


class ExitWatcher:
    """Reports exits in exit_dir to on_exit; start() must run on the event loop."""

    def __init__(self, exit_dir: Path, on_exit: Callable[[Exit], None]) -> None:
        self.exit_dir = exit_dir
        self._on_exit = on_exit
        self._watch: DirectoryWatch | None = None

    def start(self) -> None:
        self.exit_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._watch = DirectoryWatch(self.exit_dir, self._seen, self.rescan)
        self.rescan()

    def rescan(self) -> None:
        for name in sorted(os.listdir(self.exit_dir)):
            self._seen(name)

    def _seen(self, name: str) -> None:
        if not ids.is_full_id(name):
            return  # conmon's temporary files, renamed into place a moment later
        found = read_exit(self.exit_dir, name)
        if found is None:
            return
        try:
            self._on_exit(found)
        except Exception:  # a bug in a handler must not stop the watcher
            _log.exception("exit handler failed for %s", name)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None


__all__ = ["Exit", "ExitWatcher", "forget", "read_exit"]
