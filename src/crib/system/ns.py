"""Pinned namespaces: a pod's network, IPC and UTS namespaces kept alive by bind mounts on files.

No pause process holds them: `_nspin_helper.py` (a separate, single-threaded process) unshares, sets the
pod up from inside, and bind-mounts /proc/self/ns/<kind> onto files under runroot. Unpinning is umount +
unlink; the kernel frees the namespace once nothing (pin, process) refers to it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from crib import proc
from crib.system import mount

_HELPER = str(Path(__file__).with_name("_nspin_helper.py"))
PIN_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PinRequest:
    """Which namespaces to create (a None path = keep the host's) and how to set them up."""

    net: Path | None = None
    ipc: Path | None = None
    uts: Path | None = None
    hostname: str = ""
    sysctls: Mapping[str, str] | None = None


def prepare_targets(req: PinRequest) -> list[Path]:
    """Create the empty files the pins are mounted on; returns them (the caller registers unpin undos)."""
    made = []
    for path in (req.net, req.ipc, req.uts):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_EXCL, 0o444)
            os.close(fd)
            made.append(path)
    return made


async def pin(req: PinRequest, *, timeout: float = PIN_TIMEOUT) -> None:
    """Create the namespaces and pin them on the (existing) target files.

    Raises:
        ExternalCommandError: the helper failed; its message says which step (unshare, hostname, a sysctl).
    """
    argv = [sys.executable, "-I", "-S", _HELPER]
    for kind in ("net", "ipc", "uts"):
        path = getattr(req, kind)
        if path is not None:
            argv.append(f"{kind}={path}")
    if req.uts is not None and req.hostname:
        argv.append(f"hostname={req.hostname}")
    argv += [f"sysctl={k}={v}" for k, v in sorted((req.sysctls or {}).items())]
    await proc.run(argv, timeout=timeout, env={})


def unpin(path: str | os.PathLike[str]) -> None:
    """Unmount and remove a pinned namespace file; idempotent."""
    mount.umount_all(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_pinned(path: str | os.PathLike[str]) -> bool:
    """Whether path is a live namespace pin (nsfs mounted on it)."""
    try:
        return os.stat(path).st_ino != 0 and mount.is_mountpoint(path)
    except OSError:
        return False


__all__ = ["PinRequest", "is_pinned", "pin", "prepare_targets", "unpin"]
