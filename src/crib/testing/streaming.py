"""A streaming Backend on the host, for unit tests of the server and the clients (no containers).

exec runs the command as a plain host process on pipes (or a host terminal), attach connects to a
SOCK_SEQPACKET socket pair whose other end the test plays conmon on, and the dialer connects to ports on
127.0.0.1. Each started Process and Attachment is recorded, so tests can check that sessions clean up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from dataclasses import dataclass, field

from crib import proc
from crib.errors import FailedPrecondition
from crib.streaming.backend import AttachRequest, ExecRequest, PortForwardRequest
from crib.system import tty as tty_mod


class HostProcess:
    """A backend.Process running on the host."""

    def __init__(self, child: proc.Attached, stdin: int | None, stdout: int | None, stderr: int | None,
                 tty: bool) -> None:
        self.child = child
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.tty = tty
        self.sizes: list[tuple[int, int]] = []
        self.killed = False
        self.closed = False

    def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))
        if self.tty and self.stdout is not None:
            tty_mod.set_winsize(self.stdout, width, height)

    def close_stdin(self) -> None:
        if not self.tty and self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None

    async def wait(self) -> int:
        code = await self.child.wait()
        return 128 - code if code < 0 else code

    async def kill(self) -> None:
        if self.child.returncode is None:
            self.killed = True
            with_group = self.child.pid
            with contextlib.suppress(OSError):
                os.killpg(with_group, signal.SIGKILL)
        await self.child.kill()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in {self.stdin, self.stdout, self.stderr} - {None}:
            assert fd is not None
            os.close(fd)


@dataclass
class HostAttachment:
    """A backend.Attachment whose conmon end is `peer` (the test writes packets to it)."""

    sock: socket.socket
    peer: socket.socket
    stdin_once: bool = False
    tty: bool = False
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))

    def close(self) -> None:
        self.sock.close()


class HostDialer:
    """A backend.Dialer to 127.0.0.1 on the host."""

    def __init__(self) -> None:
        self.closed = False

    async def dial(self, port: int) -> socket.socket:
        import asyncio

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        self.closed = True


@dataclass
class HostBackend:
    """The Backend (see the module note); `attach_options` sets the next attachment's stdin_once/tty."""

    processes: list[HostProcess] = field(default_factory=list)
    attachments: list[HostAttachment] = field(default_factory=list)
    dialers: list[HostDialer] = field(default_factory=list)
    attach_options: dict[str, bool] = field(default_factory=dict)
    refuse: str = ""

    async def exec(self, request: ExecRequest) -> HostProcess:
        if self.refuse:
            raise FailedPrecondition(self.refuse)
        if request.tty:
            master, slave = tty_mod.open_pty()
            try:
                child = await proc.start_attached(list(request.cmd), stdin=slave, stdout=slave, stderr=slave)
            finally:
                os.close(slave)
            process = HostProcess(child, master, master, None, True)
        else:
            ends: list[tuple[int, int] | None] = []
            for wanted, reading in ((request.stdin, False), (request.stdout, True), (request.stderr, True)):
                if not wanted:
                    ends.append(None)
                    continue
                r, w = proc.pipe()
                mine, theirs = (r, w) if reading else (w, r)
                os.set_blocking(mine, False)
                ends.append((mine, theirs))
            try:
                child = await proc.start_attached(list(request.cmd), stdin=ends[0][1] if ends[0] else None,
                                                  stdout=ends[1][1] if ends[1] else None,
                                                  stderr=ends[2][1] if ends[2] else None)
            finally:
                for end in ends:
                    if end is not None:
                        os.close(end[1])
            fds = [end[0] if end else None for end in ends]
            process = HostProcess(child, fds[0], fds[1], fds[2], False)
        self.processes.append(process)
        return process

    async def attach(self, request: AttachRequest) -> HostAttachment:
        ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        attachment = HostAttachment(ours, peer, stdin_once=self.attach_options.get("stdin_once", False),
                                    tty=self.attach_options.get("tty", False))
        self.attachments.append(attachment)
        return attachment

    def dialer(self, request: PortForwardRequest) -> HostDialer:
        dialer = HostDialer()
        self.dialers.append(dialer)
        return dialer


__all__ = ["HostAttachment", "HostBackend", "HostDialer", "HostProcess"]
