"""The one way crib runs external programs.

Every call names an explicit argv (never a shell), a timeout, and gets the program's stderr into the error
it raises, because runc, conmon and CNI plugins explain their failures only there. A child that runs past
its timeout is killed and reaped before the error is raised, so no zombie or orphan is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crib.errors import DeadlineExceeded, ExternalCommandError

STDERR_TAIL = 4096


def watch_children_with_pidfds() -> None:
    """Learn of children's exits from pidfds on the running loop instead of a thread per child.

    Python 3.11's default watcher starts a thread per child that blocks in waitpid and wakes the loop
    across threads when it returns; a pod start runs about ten programs (runc, conmon, the CNI plugins),
    each paying a thread start and a cross-thread wake-up. A pidfd becomes readable on the loop itself
    (Linux 5.3+; pidwatch.py relies on them already). Python 3.12 made this the default and deprecated
    choosing, so there it is left alone. Call once, from the daemon's running loop.
    """
    if sys.version_info >= (3, 12):
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """What a finished program left: its exit code and both output streams."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def stderr_text(self) -> str:
        return tail(self.stderr)


def tail(data: bytes, limit: int = STDERR_TAIL) -> str:
    """Decode the last `limit` bytes of a program's output for an error message."""
    text = data[-limit:].decode("utf-8", "replace").strip()
    return ("..." + text) if len(data) > limit else text


def describe_failure(argv: Sequence[str], returncode: int, stderr: bytes, stdout: bytes = b"") -> str:
    """A one-paragraph account of a failed program: name, exit status, and what it said."""
    said = tail(stderr) or tail(stdout)
    status = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
    return f"{os.path.basename(argv[0])} {status}" + (f": {said}" if said else " and printed nothing")


async def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    check: bool = True,
    pass_fds: Sequence[int] = (),
    output_limit: int | None = None,
    drain_after_exit: float | None = None,
) -> Result:
    """Run argv to completion and return its output.

    Args:
        argv: program and arguments; argv[0] is a path or a name looked up in PATH.
        timeout: seconds before the program is killed; the caller must always choose one.
        input: bytes for the program's stdin (stdin is /dev/null when None).
        env: the complete environment (inherits the daemon's when None).
        cwd: working directory.
        check: raise ExternalCommandError on a non-zero exit.
        pass_fds: file descriptors the child inherits.
        output_limit: keep at most this many bytes of each stream (the rest is read and dropped), so a
            chatty program cannot exhaust the daemon's memory.
        drain_after_exit: once the program exited, wait at most this long for its output pipes to close
            (a background grandchild may hold them open forever); None waits until timeout.

    Raises:
        ExternalCommandError: the program could not be started, or exited non-zero with check=True.
        DeadlineExceeded: the program ran past timeout (it has been killed and reaped).
    """
    child = await start(argv, env=env, cwd=cwd, pass_fds=pass_fds, stdin=input is not None)
    return await child.finish(timeout=timeout, input=input, check=check, output_limit=output_limit,
                              drain_after_exit=drain_after_exit)


async def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    pass_fds: Sequence[int] = (),
    stdin: bool = False,
) -> Child:
    """Start argv and return at once, for callers that must act on the pid before the program finishes.

    conmon is the reason: it blocks on its start pipe until the daemon has moved it into the pod's cgroup,
    which needs its pid. The caller must end with Child.finish() or Child.kill(), which reap it.

    Raises:
        ExternalCommandError: the program could not be started.
    """
    args = tuple(argv)
    # Our own pipes rather than asyncio's: asyncio's Process.wait() also waits for its pipes to close,
    # and a background grandchild may hold them open for ever.
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
    except OSError as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        raise ExternalCommandError(f"cannot run {args[0]}: {exc.strerror or exc}", argv=list(args)) from exc
    finally:
        os.close(out_w)
        os.close(err_w)
    return Child(process, args, out_r, err_r)


class _Sink:
    """Reads one output pipe on the event loop, keeping at most `limit` bytes."""

    def __init__(self, fd: int, limit: int | None) -> None:
        self.fd, self.limit = fd, limit
        self.data = bytearray()
        self.eof = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self.fd)
            self.eof.set()
        elif self.limit is None:
            self.data += chunk
        elif len(self.data) < self.limit:
            self.data += chunk[: self.limit - len(self.data)]

    def close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)


class Child:
    """A started program (see start()); finish() or kill() reaps it."""

    def __init__(self, process: asyncio.subprocess.Process, argv: tuple[str, ...], out_fd: int,
                 err_fd: int) -> None:
        self._process = process
        self._fds: tuple[int, int] | None = (out_fd, err_fd)
        self.argv = argv

    @property
    def pid(self) -> int:
        return self._process.pid

    def _close_fds(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    async def kill(self) -> None:
        """SIGKILL and reap (idempotent)."""
        self._close_fds()
        await _kill_and_reap(self._process)

    async def finish(self, *, timeout: float, input: bytes | None = None, check: bool = True,
                     output_limit: int | None = None, drain_after_exit: float | None = None) -> Result:
        """Wait for the program to exit and collect its output; see run() for the arguments."""
        child, args = self._process, self.argv
        assert self._fds is not None, "finish() called twice"
        out, err = _Sink(self._fds[0], output_limit), _Sink(self._fds[1], output_limit)
        self._fds = None
        try:
            async with asyncio.timeout(timeout):
                await _feed(child.stdin, input)
                await child.wait()
                eofs = asyncio.gather(out.eof.wait(), err.eof.wait())
                # On a timeout a grandchild holds the pipes; what was written so far is the output.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(eofs, drain_after_exit)
        except TimeoutError:
            await _kill_and_reap(child)
            raise DeadlineExceeded(
                f"{os.path.basename(args[0])} did not finish within {timeout:g}s and was killed "
                f"(command: {' '.join(args)})"
            ) from None
        except BaseException:
            await _kill_and_reap(child)
            raise
        finally:
            out.close()
            err.close()
        assert child.returncode is not None
        stdout, stderr = bytes(out.data), bytes(err.data)
        result = Result(argv=args, returncode=child.returncode, stdout=stdout, stderr=stderr)
        if check and child.returncode != 0:
            raise ExternalCommandError(
                describe_failure(args, child.returncode, stderr, stdout),
                argv=list(args), returncode=child.returncode, stderr=tail(stderr),
            )
        return result


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes | None) -> None:
    if stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            stdin.write(data)
            await stdin.drain()
        stdin.close()


async def _kill_and_reap(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
    # Shielded: a cancelled caller must still not leave a zombie behind.
    with contextlib.suppress(Exception):
        await asyncio.shield(child.wait())


F_SETPIPE_SZ = 1031
PIPE_SIZE = 1024 * 1024  # the unprivileged maximum (fs.pipe-max-size); 16 times the default


def pipe(size: int = PIPE_SIZE) -> tuple[int, int]:
    """A close-on-exec pipe (read end, write end) holding up to size bytes.

    A large pipe lets a reader take big chunks per read: streaming a command's output costs several times
    less CPU than through the default 64 KiB. The size is best-effort (the default stays if refused).
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, size)
    return r, w


async def start_attached(
    argv: Sequence[str],
    *,
    stdin: int | None,
    stdout: int | None,
    stderr: int | None,
    env: Mapping[str, str] | None = None,
) -> Attached:
    """Start argv on stdio the caller supplies (an interactive exec: pipes or a terminal), returning at once.

    A None stream is /dev/null. The caller keeps its fds (closing its copies of the child's ends after
    this returns) and must end with Attached.wait() or Attached.kill(), which reap the child.

    Raises:
        ExternalCommandError: the program could not be started.
    """
    args = tuple(argv)
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=stderr if stderr is not None else subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as exc:
        raise ExternalCommandError(f"cannot run {args[0]}: {exc.strerror or exc}", argv=list(args)) from exc
    return Attached(process, args)


class Attached:
    """A program started by start_attached(); wait() or kill() reaps it."""

    def __init__(self, process: asyncio.subprocess.Process, argv: tuple[str, ...]) -> None:
        self._process = process
        self.argv = argv

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        """The exit status (negative: killed by that signal)."""
        return await self._process.wait()

    def signal(self, sig: int) -> None:
        """Send sig if the program still runs."""
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL and reap (idempotent)."""
        await _kill_and_reap(self._process)


def run_sync(argv: Sequence[str], *, timeout: float, input: bytes | None = None,
             env: Mapping[str, str] | None = None, check: bool = True) -> Result:
    """Blocking twin of run(), for start-up code and the CLI where no event loop runs."""
    args = tuple(argv)
    try:
        done = subprocess.run(args, input=input, capture_output=True, timeout=timeout,
                              env=dict(env) if env is not None else None,
                              stdin=None if input is not None else subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeadlineExceeded(f"{os.path.basename(args[0])} did not finish within {timeout:g}s") from exc
    except OSError as exc:
        raise ExternalCommandError(f"cannot run {args[0]}: {exc.strerror or exc}", argv=list(args)) from exc
    result = Result(argv=args, returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)
    if check and done.returncode != 0:
        raise ExternalCommandError(describe_failure(args, done.returncode, done.stderr, done.stdout),
                                   argv=list(args), returncode=done.returncode, stderr=tail(done.stderr))
    return result


def spawn_resident(argv: Sequence[str], *, pass_fds: Sequence[int] = (),
                   env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a long-lived helper process that is not tied to an event loop, and return it at once.

    For helpers that serve many requests over a socket (the namespace helper): the caller bounds each
    request itself, kills and reaps the helper with stop_resident() when a request runs over, and reads
    why it died with resident_stderr(). stdin and stdout are /dev/null; stderr is kept in a pipe that
    holds the helper's last words (a traceback) for the error.

    Raises:
        ExternalCommandError: the program could not be started.
    """
    args = tuple(argv)
    try:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, pass_fds=tuple(pass_fds),
                                env=dict(env) if env is not None else None, start_new_session=True)
    except OSError as exc:
        raise ExternalCommandError(f"cannot run {args[0]}: {exc.strerror or exc}", argv=list(args)) from exc


def stop_resident(helper: subprocess.Popen[bytes], *, timeout: float = 5.0) -> int | None:
    """SIGKILL and reap a resident helper (idempotent); returns its exit status (None if it outlived timeout,
    which only a process stuck in the kernel does)."""
    if helper.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            helper.kill()
    try:
        return helper.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def resident_stderr(helper: subprocess.Popen[bytes]) -> str:
    """The tail of what a dead resident helper wrote on stderr (without blocking), then the pipe is closed."""
    pipe = helper.stderr
    if pipe is None or pipe.closed:
        return ""
    data = b""
    with contextlib.suppress(OSError):
        os.set_blocking(pipe.fileno(), False)
        data = pipe.read() or b""
    pipe.close()
    return tail(data)


__all__ = ["Attached", "Child", "Result", "describe_failure", "pipe", "resident_stderr", "run", "run_sync",
           "spawn_resident", "start", "start_attached", "stop_resident", "tail", "watch_children_with_pidfds"]
