"""Sockets inside another network namespace, without any tool in that namespace.

setns(2) moves only the calling thread; a socket keeps the namespace it was created in for its whole life,
whichever thread then uses it. So a worker thread enters the pod's namespace once (setns on the pinned
namespace file) and creates sockets on request; connecting, reading and writing them happens on the event
loop as with any socket. The thread never leaves the namespace: it ends with close(), and a thread that
could not enter reports that for every request instead of creating sockets in the host's namespace.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import os
import socket

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def setns(fd: int, nstype: int) -> None:
    """Move the calling thread into the namespace of fd.

    Raises:
        OSError: setns failed (errno as the kernel set it).
    """
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetnsSockets:
    """Creates sockets in one network namespace (see the module note).

    Args:
        netns_path: the pinned namespace file (or /proc/<pid>/ns/net).

    Raises:
        OSError: the namespace file cannot be opened.
    """

    def __init__(self, netns_path: str) -> None:
        self.path = netns_path
        self._fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        self._entered: OSError | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns",
                                                           initializer=self._enter)

    def _enter(self) -> None:
        try:
            setns(self._fd, CLONE_NEWNET)
        except OSError as exc:
            self._entered = exc

    def _create(self, family: int, kind: int) -> socket.socket:
        if self._entered is not None:
            raise OSError(self._entered.errno, f"cannot enter network namespace {self.path}: "
                                               f"{self._entered.strerror}")
        sock = socket.socket(family, kind | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        return sock

    async def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new non-blocking socket that lives in the namespace."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._create, family, kind)

    def close(self) -> None:
        """End the worker thread and release the namespace; idempotent."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


__all__ = ["CLONE_NEWNET", "NetnsSockets", "setns"]
