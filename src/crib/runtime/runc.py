"""runc (or any runc-compatible OCI runtime): command lines, and their errors in plain words.

One Runc per RuntimeClass handler: its binary and its --root state directory. `create` is not here:
conmon runs it (runtime/conmon.py), so that the container's stdio and exit status belong to conmon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crib import log, proc
from crib.errors import ExternalCommandError, NotFound
from crib.system import tty as tty_mod

_log = log.get(__name__)
RUNC_TIMEOUT = 30.0
EXEC_GRACE = 5.0  # after an exec's deadline: how long runc may take to reap the killed command
_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def runtime_message(text: str) -> str:
    """The human part of runc's stderr: the msg="..." fields of its log lines, else the text itself."""
    found = [m.encode().decode("unicode_escape", errors="replace") for m in _MSG.findall(text)]
    return "; ".join(found) if found else text.strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """What runc exec left: the command's exit code and its (capped) output."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Runc:
    """One OCI runtime handler (see the module note).

    global_args go before every command (runsc's --platform=ptrace); sandboxed marks a sandbox/VM runtime
    (config.HandlerConfig.sandboxed).
    """

    handler: str
    path: str
    root: str
    global_args: tuple[str, ...] = ()
    sandboxed: bool = False

    @property
    def name(self) -> str:
        """The runtime binary's name, for messages ("runc", "runsc")."""
        return os.path.basename(self.path)

    def argv(self, *args: str) -> list[str]:
        return [self.path, "--root", self.root, *self.global_args, *args]

    async def _run(self, *args: str, timeout: float = RUNC_TIMEOUT, check: bool = True,
                   input: bytes | None = None) -> proc.Result:
        # runsc leaves helpers (a container's gofer) holding its stdout/stderr after it exits.
        drain = 1.0 if self.sandboxed else None
        try:
            return await proc.run(self.argv(*args), timeout=timeout, check=check, input=input,
                                  drain_after_exit=drain)
        except ExternalCommandError as exc:
            raise ExternalCommandError(
                f"{os.path.basename(self.path)} {args[0]} failed: {runtime_message(exc.stderr) or exc}",
                argv=exc.argv, returncode=exc.returncode, stderr=exc.stderr) from exc

    async def start(self, cid: str) -> None:
        await self._run("start", cid)

    async def kill(self, cid: str, sig: int | str = signal.SIGTERM, *, all_processes: bool = False) -> bool:
        """Send a signal; False when the container is already stopped or gone (not an error for callers)."""
        name = sig if isinstance(sig, str) else signal.Signals(sig).name
        args = ["kill", *(["--all"] if all_processes else []), cid, name]
        result = await self._run(*args, check=False)
        if result.returncode == 0:
            return True
        text = runtime_message(result.stderr.decode(errors="replace"))
        if any(s in text for s in ("not running", "does not exist", "container not created", "stopped",
                                   "no such process", "in state created")):
            return False
        raise ExternalCommandError(f"runc kill {cid} {name} failed: {text}", argv=list(result.argv),
                                   returncode=result.returncode, stderr=text)

    async def delete(self, cid: str, *, force: bool = True) -> None:
        """runc delete; a container runc does not know counts as deleted.

        A container whose state runc cannot load (damaged_state) cannot be deleted by runc at all, and would
        block its removal, and its pod's, forever: its directory under our --root, all runc keeps of it, is
        removed instead. The caller empties the container's cgroup, which runc would have done.
        """
        result = await self._run("delete", *(["--force"] if force else []), cid, check=False)
        if self.sandboxed:
            self._forget_locks(cid)
        if result.returncode == 0:
            return
        text = runtime_message(result.stderr.decode(errors="replace"))
        if "does not exist" in text or "not found" in text:
            return
        if damage := self.damaged_state(cid):
            await asyncio.to_thread(shutil.rmtree, Path(self.root) / cid, True)
            log.event(_log, 30, "runtime cannot delete a container whose state is damaged; its state "
                      "directory was removed instead", container=cid, damage=damage, error=text)
            return
        raise ExternalCommandError(f"runc delete {cid} failed: {text}", argv=list(result.argv),
                                   returncode=result.returncode, stderr=text)

    def _forget_locks(self, cid: str) -> None:
        """runsc (2022) can leave a deleted container's `<id>_sandbox:<sandbox>.lock` in its root; one
        without its `.state` belongs to no container any more. Deleting a sandbox's first container also
        sweeps what its other containers left."""
        root = Path(self.root)
        for lock in [*root.glob(f"{cid}_sandbox:*.lock"), *root.glob(f"*_sandbox:{cid}.lock")]:
            if not lock.with_suffix(".state").exists():
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()

    async def state(self, cid: str) -> dict[str, Any]:
        """runc state as a dict.

        Raises:
            NotFound: runc does not know the container.
            ExternalCommandError: runc failed otherwise (its state of the container is damaged, ...): what
                it would say is unknown, which is not the same as "gone".
        """
        result = await self._run("state", cid, check=False)
        if result.returncode != 0:
            text = runtime_message(result.stderr.decode(errors="replace"))
            if "does not exist" in text or "not found" in text:
                raise NotFound(f"runtime {self.handler} has no container {cid}: {text}")
            raise ExternalCommandError(f"{self.name} state {cid} failed: {self.damaged_state(cid) or text}",
                                       argv=list(result.argv), returncode=result.returncode, stderr=text)
        try:
            data: dict[str, Any] = json.loads(result.stdout)
        except ValueError as exc:
            raise ExternalCommandError(f"{self.name} state {cid} printed no JSON: {exc}",
                                       argv=list(result.argv), returncode=0) from exc
        return data

    def damaged_state(self, cid: str) -> str:
        """Why runc cannot load its state of a container it keeps a directory for; "" when it can, or when it
        keeps nothing of it (a container runc does not know is not damage).

        runc writes state.json by rename, so only a crash of the machine, a full disk at the wrong moment or a
        hand can leave it missing, empty or cut. Then every runc command on the container fails ("unexpected
        EOF", "container does not exist") while its processes live on. Not known for sandboxed runtimes,
        whose state is laid out differently.
        """
        if self.sandboxed:
            return ""
        path = Path(self.root) / cid / "state.json"
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return f"{self.name}'s state file {path} is missing" if path.parent.is_dir() else ""
        except (OSError, ValueError) as exc:
            return f"{self.name}'s state file {path} is damaged ({type(exc).__name__}: {exc})"
        if not isinstance(data, dict) or not data.get("id"):
            return f"{self.name}'s state file {path} is damaged (not a container's state)"
        return ""

    async def update(self, cid: str, resources: dict[str, Any]) -> None:
        await self._run("update", "--resources", "-", cid, input=json.dumps(resources).encode())

    async def exec(self, cid: str, process_file: Path, *, timeout: float, output_limit: int) -> ExecResult:
        """runc exec a process.json; a command still running at the deadline is killed with its group.

        runc's own failure (no such binary, bad cwd) raises ExternalCommandError: runc writes the pid file
        only once the process exists, which tells a runtime failure apart from a command exiting 255.
        """
        pid_file = process_file.with_suffix(".pid")
        argv = self.argv("exec", "--process", str(process_file), "--pid-file", str(pid_file), cid)
        inner = process_file.with_suffix(".ipid")  # a sandbox's own pid of the command (runsc)
        if self.sandboxed:
            argv[-1:-1] = ["--internal-pid-file", str(inner)]
        child = await proc.start(argv)
        # runc exec stays the command's parent: killing the command first lets runc reap it and exit, so
        # no zombie of it is left in the container when the caller looks (critest does, at once).
        finish = asyncio.ensure_future(child.finish(timeout=timeout + EXEC_GRACE, check=False,
                                                    output_limit=output_limit, drain_after_exit=0.5))
        try:
            result = await asyncio.wait_for(asyncio.shield(finish), timeout)
        except asyncio.CancelledError:  # the caller gave up: the command must not outlive the call
            await self._kill_inner(cid, inner)
            await _abort_exec(pid_file, finish)
            raise
        except TimeoutError:
            await self._kill_inner(cid, inner)
            await _abort_exec(pid_file, finish)
            return ExecResult(exit_code=-1, stdout=b"", stderr=b"", timed_out=True)
        finally:
            for path in (pid_file, inner):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if result.returncode == 255 and not _started(result):
            raise ExternalCommandError(
                f"exec in container {cid} failed: {runtime_message(result.stderr.decode(errors='replace'))}",
                argv=argv, returncode=255, stderr=proc.tail(result.stderr))
        return ExecResult(exit_code=result.returncode, stdout=result.stdout, stderr=result.stderr)

    async def exec_attached(self, cid: str, process_file: Path, *, tty: bool, stdin: bool, stdout: bool,
                            stderr: bool) -> InteractiveExec:
        """Start `runc exec` of a process.json for an interactive session (the command's stdio is ours).

        Without a terminal the command gets pipes (or /dev/null for a stream not asked for); runc passes
        them straight on, so runc's own failure to start it appears on that stderr, with exit code 255.
        With a terminal, runc gets the slave of a host pseudo-terminal (system/tty.py) and crib keeps the
        master. The process.json and the pid file are removed by InteractiveExec.close().

        Raises:
            ExternalCommandError: runc could not be started.
        """
        pid_file = process_file.with_suffix(".pid")
        argv = self.argv("exec", "--process", str(process_file), "--pid-file", str(pid_file), cid)
        ours: list[int] = []
        theirs: list[int] = []
        try:
            if tty:
                master, slave = tty_mod.open_pty()
                ours.append(master)
                theirs.append(slave)
                child = await proc.start_attached(argv, stdin=slave, stdout=slave, stderr=slave)
                fds: tuple[int | None, int | None, int | None] = (master, master, None)
            else:
                ends: list[tuple[int, int] | None] = []
                for wanted, reading in ((stdin, False), (stdout, True), (stderr, True)):
                    if not wanted:
                        ends.append(None)
                        continue
                    r, w = proc.pipe()
                    mine, child_end = (r, w) if reading else (w, r)
                    ours.append(mine)
                    theirs.append(child_end)
                    os.set_blocking(mine, False)
                    ends.append((mine, child_end))
                child = await proc.start_attached(argv, stdin=ends[0][1] if ends[0] else None,
                                                  stdout=ends[1][1] if ends[1] else None,
                                                  stderr=ends[2][1] if ends[2] else None)
                fds = (ends[0][0] if ends[0] else None, ends[1][0] if ends[1] else None,
                       ends[2][0] if ends[2] else None)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        return InteractiveExec(child, stdin=fds[0], stdout=fds[1], stderr=fds[2], tty=tty,
                               files=(process_file, pid_file))

    async def _kill_inner(self, cid: str, inner: Path) -> None:
        """SIGKILL an exec'd command inside a sandbox: it has no host process of its own (killing `runsc
        exec` would leave it running), only the sandbox's pid, which `kill --pid` takes."""
        if not self.sandboxed:
            return
        pid = _read_pid(inner)
        if pid > 0:
            with contextlib.suppress(ExternalCommandError):
                await self._run("kill", "--pid", str(pid), cid, "SIGKILL", check=False, timeout=10.0)

    async def stats(self, cid: str) -> dict[str, Any]:
        """`<runtime> events --stats`: the container's counters as the runtime accounts them (the "data" of
        runc's stats event: cpu.usage.total, memory.usage.usage, memory.cache, pids.current, ...)."""
        result = await self._run("events", "--stats", cid, timeout=10.0)
        data: dict[str, Any] = json.loads(result.stdout).get("data") or {}
        return data

    async def features(self) -> dict[str, Any]:
        result = await self._run("features", timeout=10.0)
        data: dict[str, Any] = json.loads(result.stdout)
        return data


class InteractiveExec:
    """A command run by `runc exec` for a streaming session (see Runc.exec_attached); its fds are
    non-blocking. With a terminal, stdin and stdout are the same master fd."""

    def __init__(self, child: proc.Attached, *, stdin: int | None, stdout: int | None, stderr: int | None,
                 tty: bool, files: tuple[Path, ...]) -> None:
        self._child = child
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.tty = tty
        self._files = files
        self._closed = False

    @property
    def pid_file(self) -> Path:
        return self._files[-1]

    def resize(self, width: int, height: int) -> None:
        """Set the terminal's size; runc, told by SIGWINCH, copies it to the container's terminal."""
        if self.tty and self.stdout is not None and not self._closed:
            tty_mod.set_winsize(self.stdout, width, height)
            self._child.signal(signal.SIGWINCH)

    def close_stdin(self) -> None:
        """End of input for a command without a terminal (a terminal has no end: ^D is the user's)."""
        if not self.tty and self.stdin is not None and not self._closed:
            os.close(self.stdin)
            self.stdin = None

    async def wait(self) -> int:
        """runc's exit status: the command's own, 128+n after signal n, 255 when runc itself failed."""
        code = await self._child.wait()
        return 128 - code if code < 0 else code

    async def kill(self) -> None:
        """Kill the command and its group, then reap runc (it exits once the command is gone)."""
        if self._child.returncode is not None:
            return
        _kill_exec(self.pid_file)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._child.wait()), EXEC_GRACE)
        await self._child.kill()

    def close(self) -> None:
        """Close crib's ends and remove the process.json and pid file; idempotent."""
        if self._closed:
            return
        self._closed = True
        for fd in {self.stdin, self.stdout, self.stderr} - {None}:
            assert fd is not None
            with contextlib.suppress(OSError):
                os.close(fd)
        self.stdin = self.stdout = self.stderr = None
        for path in self._files:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _started(result: proc.Result) -> bool:
    # runc prints its failures as log lines with level=error; a command's own exit 255 prints none.
    return b"level=error" not in result.stderr and b"exec failed" not in result.stderr


async def _abort_exec(pid_file: Path, finish: asyncio.Future[proc.Result]) -> None:
    _kill_exec(pid_file)
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(finish), EXEC_GRACE)
    if not finish.done():
        finish.cancel()  # finish() kills and reaps runc when cancelled


def sweep_execs(bundle: Path, container_pid: int) -> int:
    """Kill exec'd commands a dead daemon left running in a container, and remove their files.

    An exec's command is a child of runc, itself the daemon's child: when the daemon dies without ending
    its sessions (SIGKILL, OOM), such a command keeps running with nobody reading it. Its process.json
    and pid file are still in the bundle. A pid that still runs in the container's mount namespace is
    killed with its group; a recycled pid lives elsewhere and is left alone. Returns how many were killed.
    """
    killed = 0
    try:
        container_ns = os.stat(f"/proc/{container_pid}/ns/mnt").st_ino if container_pid > 0 else -1
    except OSError:
        container_ns = -1
    for pid_file in bundle.glob("exec-*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            same = os.stat(f"/proc/{pid}/ns/mnt").st_ino == container_ns
        except (OSError, ValueError):
            same = False
        if same:
            _kill_exec(pid_file)
            killed += 1
    for leftover in (*bundle.glob("exec-*.pid"), *bundle.glob("exec-*.json")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    return killed


def _kill_exec(pid_file: Path) -> None:
    """SIGKILL an exec'd process that outlived its timeout, and its process group if it has its own."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(OSError):
        pgid = os.getpgid(pid)
        if pgid > 1 and pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


__all__ = ["ExecResult", "InteractiveExec", "Runc", "runtime_message", "sweep_execs"]
