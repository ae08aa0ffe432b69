"""What a streaming session asks of the node, behind narrow Protocols (built in daemon.py).

The server never runs runc or touches a namespace itself: an exec session asks the Backend for a started
Process (runc exec, its stdio as pipes or a pty), an attach session for an Attachment (a connection to
conmon's attach socket), a port-forward session for a Dialer (sockets opened in the pod's network
namespace). The requests are crib's own frozen records of the CRI calls that minted the URLs.
"""

from __future__ import annotations

import enum
import socket
import typing
from dataclasses import dataclass


class Kind(enum.StrEnum):
    EXEC = "exec"
    ATTACH = "attach"
    PORTFORWARD = "portforward"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True

    kind: typing.ClassVar[Kind] = Kind.ATTACH


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecRequest(AttachRequest):
    """An attach's streams, to a new process running cmd."""

    cmd: tuple[str, ...]

    kind: typing.ClassVar[Kind] = Kind.EXEC


@dataclass(frozen=True, slots=True, kw_only=True)
class PortForwardRequest:
    sandbox_id: str
    ports: tuple[int, ...] = ()

    kind: typing.ClassVar[Kind] = Kind.PORTFORWARD


StreamRequest = ExecRequest | AttachRequest | PortForwardRequest


class Process(typing.Protocol):
    """A command started for an exec session. Its fds are non-blocking and owned by the Process."""

    stdin: int | None  # write end of its stdin; with a tty, the terminal's master
    stdout: int | None  # read end of its stdout; with a tty, the terminal's master
    stderr: int | None  # read end of its stderr; never with a tty

    def resize(self, width: int, height: int) -> None:
        """Set the terminal size (no-op without a tty)."""

    def close_stdin(self) -> None:
        """End the command's input (no-op with a tty: a terminal has no end of input)."""

    async def wait(self) -> int:
        """The command's exit code (128+signal when a signal killed it)."""

    async def kill(self) -> None:
        """Kill the command (and its process group) and reap what ran it; idempotent."""

    def close(self) -> None:
        """Release the fds; idempotent."""


class Attachment(typing.Protocol):
    """A connection to a running container's stdio (conmon's attach socket)."""

    sock: socket.socket  # SOCK_SEQPACKET, non-blocking: stdin out; 1 type byte + data in
    stdin_once: bool  # the container's stdin closes when this attach ends
    tty: bool  # the container has a terminal

    def resize(self, width: int, height: int) -> None:
        """Resize the container's terminal."""

    def close(self) -> None:
        """Close the connection; idempotent."""


class Dialer(typing.Protocol):
    """Opens TCP connections to ports of one pod, inside its network namespace."""

    async def dial(self, port: int) -> socket.socket:
        """A connected, non-blocking socket to the pod's localhost:port.

        Raises:
            OSError: the connection failed (refused, ...); the message goes to the client.
            CribError: the pod is gone or not ready.
        """

    def close(self) -> None:
        """Release what the dialer holds (its namespace thread); idempotent."""


class Backend(typing.Protocol):
    """The node, as streaming sessions see it."""

    async def exec(self, request: ExecRequest) -> Process:
        """Start request.cmd in the container.

        Raises:
            CribError: the container is gone or not running, or runc failed to start the command.
        """

    async def attach(self, request: AttachRequest) -> Attachment:
        """Connect to the container's stdio."""

    def dialer(self, request: PortForwardRequest) -> Dialer:
        """A dialer for the pod's ports."""


__all__ = ["AttachRequest", "Attachment", "Backend", "Dialer", "ExecRequest", "Kind", "PortForwardRequest",
           "Process", "StreamRequest"]
