"""The one way crib runs external programs.

Every call names an explicit argv (never a shell), a timeout, and gets the program's stderr into the error
it raises, because runc, conmon and CNI plugins explain their failures only there. A child that runs past
its timeout is killed and reaped before the error is raised, so no zombie or orphan is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crib.errors import DeadlineExceeded, ExternalCommandError

STDERR_TAIL = 4096


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

    Raises:
        ExternalCommandError: the program could not be started, or exited non-zero with check=True.
        DeadlineExceeded: the program ran past timeout (it has been killed and reaped).
    """
    args = tuple(argv)
    try:
        child = await asyncio.create_subprocess_exec(
            *args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
    except OSError as exc:
        raise ExternalCommandError(f"cannot run {args[0]}: {exc.strerror or exc}", argv=list(args)) from exc
    try:
        stdout, stderr = await asyncio.wait_for(child.communicate(input), timeout)
    except TimeoutError:
        await _kill_and_reap(child)
        raise DeadlineExceeded(
            f"{os.path.basename(args[0])} did not finish within {timeout:g}s and was killed "
            f"(command: {' '.join(args)})"
        ) from None
    except BaseException:
        await _kill_and_reap(child)
        raise
    assert child.returncode is not None
    result = Result(argv=args, returncode=child.returncode, stdout=stdout, stderr=stderr)
    if check and child.returncode != 0:
        raise ExternalCommandError(
            describe_failure(args, child.returncode, stderr, stdout),
            argv=list(args), returncode=child.returncode, stderr=tail(stderr),
        )
    return result


async def _kill_and_reap(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
    # Shielded: a cancelled caller must still not leave a zombie behind.
    with contextlib.suppress(Exception):
        await asyncio.shield(child.wait())


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


__all__ = ["Result", "describe_failure", "run", "run_sync", "tail"]
