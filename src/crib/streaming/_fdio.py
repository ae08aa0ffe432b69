"""Non-blocking reads and writes on raw file descriptors (pipes, a pty master) from the event loop.

Why not asyncio's pipe transports: a transport reads whenever the fd is readable and buffers without bound
unless paused by hand, and cannot tell a pty's EIO (the terminal's last writer is gone: end of output)
from a real error. Here a read happens only when the consumer asks for the next chunk, so the pipe
itself is the buffer and a slow client stops the process (backpressure by construction).
"""

from __future__ import annotations

import asyncio
import errno
import os

CHUNK = 256 * 1024


async def _ready(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await waiter
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def read(fd: int, size: int = CHUNK) -> bytes:
    """The next bytes from fd (which must be non-blocking); b"" at end of file.

    A pty master reports EIO once the terminal's last user closed it: that is the end of its output.
    """
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await _ready(fd, write=False)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise


async def readinto(fd: int, buf: bytearray) -> int:
    """Like read(), into a buffer the caller reuses: no allocation (and no fresh pages to fault in) per
    chunk, which is most of the cost of moving a command's output. 0 at end of file."""
    while True:
        try:
            return os.readv(fd, [buf])
        except BlockingIOError:
            await _ready(fd, write=False)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return 0
            raise


async def write(fd: int, data: bytes | memoryview) -> None:
    """Write all of data to fd (non-blocking), waiting whenever the reader is behind.

    Raises:
        BrokenPipeError: the reading end is closed.
    """
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _ready(fd, write=True)
            continue
        view = view[n:]


def set_nonblocking(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None and fd >= 0:
            os.set_blocking(fd, False)


__all__ = ["CHUNK", "read", "readinto", "set_nonblocking", "write"]
