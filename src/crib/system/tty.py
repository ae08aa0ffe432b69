"""Terminals for interactive exec: a host pseudo-terminal for runc, and window sizes.

A `runc exec` of a process with a terminal, not detached, creates the container's terminal and copies
between it and its own stdio, which must itself be a terminal (runc puts it in raw mode). So crib gives
runc the slave of a host pseudo-terminal as stdin, stdout and stderr, and talks to the master. A resize
is set on the master and signalled to runc (SIGWINCH), which copies the size to the container's terminal.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios


def set_winsize(fd: int, width: int, height: int) -> None:
    """TIOCSWINSZ on a terminal (the kernel then signals SIGWINCH to its foreground group)."""
    if width <= 0 or height <= 0:
        return
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", min(height, 65535), min(width, 65535), 0, 0))


def get_winsize(fd: int) -> tuple[int, int]:
    """(width, height) of a terminal."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return cols, rows


def open_pty() -> tuple[int, int]:
    """A new pseudo-terminal: (master, slave). The master is non-blocking and close-on-exec; the slave is
    for a child's stdio (the caller closes its copy once the child started)."""
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    os.set_blocking(master, False)
    return master, slave


__all__ = ["get_winsize", "open_pty", "set_winsize"]
