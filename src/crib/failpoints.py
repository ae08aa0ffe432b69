"""Failure injection for tests: make a named step of pod or container creation fail on purpose.

The integration tests prove that a failure at any step of RunPodSandbox or CreateContainer leaves
nothing behind. They start a daemon with CRIB_TESTING=1 and CRIB_FAILPOINTS=<name>[,<name>...]; each
step calls hit("<name>") right after its own side effect (and after registering its undo), so the
injected error exercises exactly the undo chain a real failure there would.

A name written `<name>:crash` makes the daemon SIGKILL itself there instead, as a crash would: the
restart tests use it to prove that a creation cut half-way is undone when the daemon comes back.

Without CRIB_TESTING=1 the variable is ignored, so a stray environment cannot break a production
daemon. The set is read once, at import.
"""

from __future__ import annotations

import os
import signal

from crib.errors import CribError


class InjectedFailure(CribError):
    """Raised by an armed failpoint."""


def _armed() -> frozenset[str]:
    if os.environ.get("CRIB_TESTING") != "1":
        return frozenset()
    return frozenset(n.strip() for n in os.environ.get("CRIB_FAILPOINTS", "").split(",") if n.strip())


_ARMED = _armed()


def hit(name: str) -> None:
    """Raise InjectedFailure if the failpoint `name` is armed (or die, if armed as `name:crash`)."""
    if name in _ARMED:
        raise InjectedFailure(f"failpoint {name} (injected by CRIB_FAILPOINTS for a test)")
    if f"{name}:crash" in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["InjectedFailure", "hit"]
