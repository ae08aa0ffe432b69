"""The soak's fault injector: at random intervals, one fault of a random kind, each undone before the next.

    conmon_kill       kill -9 the conmon of a running container
    container_kill    kill -9 a container's process
    cni_kill          kill -9 a CNI plugin in the middle of an ADD (the failpoint plugin stalls while a file
                      exists and writes its pid; the ADD fails and must leave nothing)
    runc_create_kill  kill -9 `runc create` while a CreateContainer runs
    daemon_kill       kill -9 the crib daemon and start it again (records must read back)
    registry_stall    the proxy stops sending a layer half-way through a pull
    disk_fill         fill crib's root filesystem, hold it full for a few seconds, free it

Processes are found through crib's own runroot (conmon's and runc's command lines name it), never by name
alone, so nothing of another runtime or engineer is touched.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.soak.client import Stats
from bench.soak.env import Env

KINDS = ("conmon_kill", "container_kill", "cni_kill", "runc_create_kill", "daemon_kill", "registry_stall",
         "disk_fill")
HOLD = 5.0  # seconds a stall or a full disk is kept


def _processes(argv0: str, needle: str) -> list[tuple[int, list[str]]]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args if a]
        if words and os.path.basename(words[0]) == argv0 and any(needle in w for w in words):
            out.append((int(entry), words))
    return out


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class RestartHooks:
    """What the soak checks around a daemon kill: before (daemon up), while down, after the restart."""

    before_kill: Callable[[], object]
    while_down: Callable[[], None]
    after_restart: Callable[[object], None]


class Injector:
    """Runs faults until stopped (see the module note)."""

    def __init__(self, env: Env, stats: Stats, rng: random.Random, interval: tuple[float, float],
                 hooks: RestartHooks) -> None:
        self.env = env
        self.stats = stats
        self.rng = rng
        self.interval = interval
        self.hooks = hooks
        self.restarting = threading.Event()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.rng.uniform(*self.interval)):
            kind = self.rng.choice(KINDS)
            start = time.monotonic()
            try:
                done = getattr(self, kind)()
            except Exception as exc:
                self.stats.violation(f"fault {kind} could not be injected or undone: "
                                     f"{type(exc).__name__}: {exc}")
                done = False
            self.stats.fault_window(kind, start, time.monotonic())
            self.stats.count("faults", kind if done else f"{kind} (no target)")

    # ---------------------------------------------------------------------------------- the faults

    def conmon_kill(self) -> bool:
        victims = [pid for pid, _ in _processes("conmon", str(self.env.runroot))]
        return bool(victims) and _kill(self.rng.choice(victims))

    def container_kill(self) -> bool:
        pids = []
        for pidfile in (self.env.runroot / "containers").glob("*/pidfile"):
            try:
                pids.append(int(pidfile.read_text().strip()))
            except (OSError, ValueError):
                continue
        return bool(pids) and _kill(self.rng.choice(pids))

    def cni_kill(self) -> bool:
        marker = self.env.stall_marker
        marker.unlink(missing_ok=True)
        self.env.stall_file.touch()
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if marker.exists():
                    return _kill(int(marker.read_text()))
                time.sleep(0.05)
            return False
        finally:
            self.env.stall_file.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)

    def runc_create_kill(self) -> bool:
        runc_root = str(self.env.runc_root)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for pid, args in _processes("runc", runc_root):
                if "create" in args:
                    return _kill(pid)
            time.sleep(0.005)
        return False

    def daemon_kill(self) -> bool:
        self.restarting.set()
        try:
            seen = self.hooks.before_kill()
            self.env.daemon.kill()
            self.hooks.while_down()
            self.env.daemon.start()
            self.hooks.after_restart(seen)
        finally:
            self.restarting.clear()
        return True

    def registry_stall(self) -> bool:
        with self.env.proxy._lock:  # the proxy's own lock guards its fault tables
            self.env.proxy.stall.update(self.env.pullme_blobs)
        time.sleep(HOLD)
        with self.env.proxy._lock:
            self.env.proxy.stall.difference_update(self.env.pullme_blobs)
        return True

    def disk_fill(self) -> bool:
        filler = self.env.root / "soak-filler"
        stat = os.statvfs(self.env.root)
        size = stat.f_bavail * stat.f_frsize - 256 * 1024
        if size <= 0:
            return False
        try:
            subprocess.run(["fallocate", "-l", str(size), str(filler)], check=True, capture_output=True,
                           timeout=60)
            time.sleep(HOLD)
        finally:
            filler.unlink(missing_ok=True)
        return True


__all__ = ["KINDS", "Injector", "RestartHooks"]
