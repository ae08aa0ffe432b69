"""Per-interface counters of network namespaces: /proc/net/dev as seen from inside each one.

A pod's network namespace is pinned to a file and may hold no process at all (a pod between containers),
so its counters cannot come from /proc/<pid>/net/dev. Instead one short-lived thread enters each
namespace in turn (setns(2) changes only the calling thread's network namespace) and reads
/proc/thread-self/net/dev there; the thread then ends, so no worker of any pool is ever left in a pod's
namespace. One thread per reading of the whole node: the cost is one setns and one file per pod.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceStats:
    """The counters of one interface (cumulative since it was created)."""

    name: str
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_dropped: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0


def parse_net_dev(text: str) -> tuple[InterfaceStats, ...]:
    """/proc/net/dev, loopback left out (kubelet and cAdvisor report the pod's real interfaces only)."""
    out = []
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        name = name.strip()
        fields = rest.split()
        if len(fields) < 16 or name == "lo":
            continue
        try:
            v = [int(x) for x in fields[:12]]
        except ValueError:
            continue
        out.append(InterfaceStats(name=name, rx_bytes=v[0], rx_packets=v[1], rx_errors=v[2], rx_dropped=v[3],
                                  tx_bytes=v[8], tx_packets=v[9], tx_errors=v[10], tx_dropped=v[11]))
    return tuple(out)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _read_all(paths: Sequence[str], out: dict[str, tuple[InterfaceStats, ...]]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # unpinned meanwhile: the pod is going away
        try:
            _setns(fd)
            with open("/proc/thread-self/net/dev") as fh:
                out[path] = parse_net_dev(fh.read())
        except OSError:
            continue
        finally:
            os.close(fd)


def read_namespaces(paths: Sequence[str], *, timeout: float = 10.0) -> dict[str, tuple[InterfaceStats, ...]]:
    """Interface counters of each pinned network namespace path; a path that cannot be entered is left out.

    Blocking (it waits for its thread); call it from a worker thread, not the event loop.
    """
    out: dict[str, tuple[InterfaceStats, ...]] = {}
    if not paths:
        return out
    worker = threading.Thread(target=_read_all, args=(list(paths), out), name="crib-netdev", daemon=True)
    worker.start()
    worker.join(timeout)
    return dict(out)


__all__ = ["InterfaceStats", "parse_net_dev", "read_namespaces"]
