"""Exec and attach sessions, independent of the transport (SPDY streams or WebSocket channels).

A session gets its streams already set up (stdin, stdout, stderr, error, resize: whichever the request
and protocol have) and runs the command or the attachment between them:

* exec: copy client stdin -> process, process stdout/stderr -> client, resize messages -> the terminal;
  when the process exits, drain its output (bounded: a background grandchild may hold the pipe open),
  then write the final status on the error stream. If the client goes away or the session idles out
  first, the process is killed: nothing outlives its session.
* attach (CRI-O's semantics): copy conmon's attach packets (1 type byte: 2 stdout, 3 stderr) out and
  stdin in; when the client's stdin ends, conmon is told (SHUT_WR; it closes the container's stdin when
  the container is stdin_once), and the session ends then unless the container is stdin_once or has a
  terminal, in which case it ends with the container's output.

The error stream carries the outcome: protocols v4 and v5 a JSON metav1.Status (NonZeroExitCode with an
ExitCode cause), v1-v3 the error text alone (nothing on success).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import typing
from collections.abc import Awaitable
from dataclasses import dataclass

from crib import log
from crib.errors import CribError
from crib.streaming import _fdio
from crib.streaming.backend import Attachment, AttachRequest, Backend, ExecRequest, Process

_log = log.get(__name__)

# Remote command subprotocols over SPDY, the server's preference order (the client's order decides).
SPDY_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io")
DRAIN_IDLE = 1.0  # after the process exited: give up draining output once nothing came for this long
FINISH_TIMEOUT = 10.0
ENDED_MESSAGE = "the session ended: the client went away or sent nothing for the stream idle timeout"
SHUTDOWN_MESSAGE = "the crib daemon is shutting down; the session ended (the container goes on)"
ATTACH_PACKET = 32768  # conmon's attach socket buffer: a larger stdin packet would be truncated
ATTACH_STDOUT, ATTACH_STDERR = 2, 3


class Input(typing.Protocol):
    async def read(self) -> bytes:
        """The next chunk; b"" at end of stream."""


class Output(typing.Protocol):
    async def write(self, data: bytes | memoryview) -> None:
        """Send data (waiting on backpressure); data is not kept once this returns."""

    def close(self) -> None:
        """End of this stream (idempotent)."""


@dataclass(slots=True, kw_only=True)
class Streams:
    """One session's streams. version is the negotiated protocol's number (1 for channel.k8s.io)."""

    version: int
    error: Output
    stdin: Input | None = None
    stdout: Output | None = None
    stderr: Output | None = None
    resize: Input | None = None


def protocol_version(name: str) -> int:
    """5 for v5.channel.k8s.io (and its base64 twin), ... 1 for channel.k8s.io or none."""
    head = name.split(".", 1)[0]
    return int(head[1:]) if head[:1] == "v" and head[1:].isdigit() else 1


# ---------------------------------------------------------------------------------------------- status


def status(version: int, *, exit_code: int = 0, error: str = "", cmd: tuple[str, ...] = ()) -> bytes:
    """What goes on the error stream at the end; b"" when nothing should (v1-v3 success)."""
    if version < 4:
        if error:
            return error.encode()
        if exit_code:
            return f"command terminated with non-zero exit code: exit status {exit_code}".encode()
        return b""
    if error:
        doc: dict[str, object] = {
            "metadata": {}, "status": "Failure", "message": f"Internal error occurred: {error}",
            "reason": "InternalError", "details": {"causes": [{"message": error}]}, "code": 500}
    elif exit_code:
        doc = {"metadata": {}, "status": "Failure",
               "message": f"command terminated with non-zero exit code: error executing command "
                          f"{list(cmd)}, exit code {exit_code}",
               "reason": "NonZeroExitCode",
               "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}
    else:
        doc = {"metadata": {}, "status": "Success"}
    return json.dumps(doc, separators=(",", ":")).encode()


async def finish(streams: Streams, payload: bytes) -> None:
    """Close the output streams, then write the status and close the error stream.

    Bounded: a client that stopped reading must not keep the session (and its process slot) forever.
    """
    for out in (streams.stdout, streams.stderr):
        if out is not None:
            out.close()
    with contextlib.suppress(ConnectionError, TimeoutError):
        if payload:
            await asyncio.wait_for(streams.error.write(payload), FINISH_TIMEOUT)
    streams.error.close()


# ---------------------------------------------------------------------------------------------- pumps


async def _resizes(stream: Input, apply: typing.Callable[[int, int], None]) -> None:
    """Apply each {"Width":..,"Height":..} object of the resize stream (split anyhow across chunks)."""
    decoder, text = json.JSONDecoder(), ""
    while chunk := await stream.read():
        text += chunk.decode(errors="replace")
        while text.strip():
            try:
                size, end = decoder.raw_decode(text.lstrip())
            except ValueError:
                if len(text) > 4096:
                    return  # garbage: stop listening rather than grow
                break
            text = text.lstrip()[end:]
            if isinstance(size, dict):
                with contextlib.suppress(TypeError, ValueError, OSError):
                    apply(int(size.get("Width", 0)), int(size.get("Height", 0)))


class _Progress:
    def __init__(self) -> None:
        self.bytes = 0


async def _fd_out(fd: int, out: Output | None, progress: _Progress) -> None:
    buf = bytearray(_fdio.CHUNK)
    view = memoryview(buf)
    # Each chunk is copied into its frame by write(), so the buffer is free again when write() returns.
    while n := await _fdio.readinto(fd, buf):
        progress.bytes += n
        if out is not None:
            await out.write(view[:n])


async def _stdin_to_fd(stream: Input, process: Process) -> None:
    assert process.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionError):
        while data := await stream.read():
            await _fdio.write(process.stdin, data)
    process.close_stdin()


async def _drain(tasks: list[asyncio.Task[None]], progress: _Progress) -> None:
    """Let the output pumps finish after the process exited, while they still make progress."""
    while True:
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        seen = progress.bytes
        await asyncio.wait(pending, timeout=DRAIN_IDLE)
        if progress.bytes == seen and any(not t.done() for t in pending):
            return


async def _shutting_down(streams: Streams) -> None:
    """Tell the client why its session ends (the daemon stops), if it can be told quickly."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(finish(streams, status(streams.version, error=SHUTDOWN_MESSAGE)), 1.0)


async def _cancel(*tasks: asyncio.Task[typing.Any] | None) -> None:
    """Cancel what still runs, and collect every outcome (a pump that failed because the client went
    away is expected, not an error to report)."""
    present = [t for t in tasks if t is not None]
    for task in present:
        task.cancel()
    await asyncio.gather(*present, return_exceptions=True)


# ------------------------------------------------------------------------------------------ exec, attach


async def run_exec(backend: Backend, request: ExecRequest, streams: Streams, ended: Awaitable[None]) -> str:
    """Run an exec session to its end; returns how it ended (for the log line).

    Args:
        ended: completes when the client went away or the session idled out.
    """
    try:
        process = await backend.exec(request)
    except CribError as exc:
        await finish(streams, status(streams.version, error=str(exc)))
        return f"failed to start: {exc}"
    progress = _Progress()
    outs: list[asyncio.Task[None]] = []
    side: list[asyncio.Task[None]] = []
    ended_task = asyncio.ensure_future(ended)
    waiter = asyncio.ensure_future(process.wait())
    try:
        if process.stdout is not None:
            outs.append(asyncio.ensure_future(_fd_out(process.stdout, streams.stdout, progress)))
        if process.stderr is not None:
            outs.append(asyncio.ensure_future(_fd_out(process.stderr, streams.stderr, progress)))
        if streams.stdin is not None and process.stdin is not None:
            side.append(asyncio.ensure_future(_stdin_to_fd(streams.stdin, process)))
        if streams.resize is not None:
            side.append(asyncio.ensure_future(_resizes(streams.resize, process.resize)))
        # An output pump that fails means the client is gone: that ends the session too.
        failed = asyncio.ensure_future(_first_failure(outs))
        await asyncio.wait({waiter, ended_task, failed}, return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        if not waiter.done():
            await process.kill()
            await _cancel(*outs, *side)
            if ended_task.done():  # an idle client still listens: tell it (a gone one is not told)
                await finish(streams, status(streams.version, error=ENDED_MESSAGE))
                return "client gone or idle"
            return "client stream failed"
        await _drain(outs, progress)
        try:
            exit_code = waiter.result()
        except CribError as exc:
            await finish(streams, status(streams.version, error=str(exc)))
            return f"failed: {exc}"
        await _cancel(*outs, *side, ended_task)
        await finish(streams, status(streams.version, exit_code=exit_code, cmd=request.cmd))
        return f"exit code {exit_code}"
    except asyncio.CancelledError:
        await _shutting_down(streams)
        raise
    finally:
        await _cancel(waiter, ended_task, *outs, *side)
        await process.kill()
        process.close()


async def _first_failure(tasks: list[asyncio.Task[None]]) -> None:
    """Completes when one of tasks failed (raised); never if they all succeed."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if any(not t.cancelled() and t.exception() is not None for t in done):
            return
    await asyncio.get_running_loop().create_future()


async def _attach_out(sock: socket.socket, streams: Streams) -> None:
    loop = asyncio.get_running_loop()
    while packet := await loop.sock_recv(sock, ATTACH_PACKET + 1):
        kind, data = packet[0], packet[1:]
        out = streams.stderr if kind == ATTACH_STDERR else streams.stdout
        if out is not None and data:
            await out.write(data)


async def _attach_in(stream: Input, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError, ConnectionError):
        while data := await stream.read():
            for i in range(0, len(data), ATTACH_PACKET):
                await loop.sock_sendall(sock, data[i:i + ATTACH_PACKET])
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)  # conmon: this client's stdin ended


async def run_attach(backend: Backend, request: AttachRequest, streams: Streams,
                     ended: Awaitable[None]) -> str:
    """Run an attach session to its end (see the module note); returns how it ended."""
    try:
        attachment: Attachment = await backend.attach(request)
    except CribError as exc:
        await finish(streams, status(streams.version, error=str(exc)))
        return f"failed to attach: {exc}"
    ended_task = asyncio.ensure_future(ended)
    out = asyncio.ensure_future(_attach_out(attachment.sock, streams))
    stdin = asyncio.ensure_future(_attach_in(streams.stdin, attachment.sock)) \
        if streams.stdin is not None else None
    resize = asyncio.ensure_future(_resizes(streams.resize, attachment.resize)) \
        if streams.resize is not None else None
    try:
        watch = {out, ended_task} | ({stdin} if stdin is not None else set())
        await asyncio.wait(watch, return_when=asyncio.FIRST_COMPLETED)
        if stdin is not None and stdin.done() and not out.done() and not ended_task.done() \
                and (attachment.stdin_once or attachment.tty or request.tty):
            await asyncio.wait({out, ended_task}, return_when=asyncio.FIRST_COMPLETED)
        if ended_task.done() and not out.done():
            await finish(streams, status(streams.version, error=ENDED_MESSAGE))
            return "client gone or idle"
        failed = out.done() and not out.cancelled() and out.exception() is not None
        await finish(streams, status(streams.version))
        return "output failed" if failed else "ended"
    except asyncio.CancelledError:
        await _shutting_down(streams)
        raise
    finally:
        await _cancel(out, stdin, resize, ended_task)
        attachment.close()


__all__ = ["SPDY_PROTOCOLS", "Input", "Output", "Streams", "finish", "protocol_version", "run_attach",
           "run_exec", "status"]
