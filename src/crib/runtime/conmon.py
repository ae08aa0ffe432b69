"""conmon: the per-container monitor that runs `runc create`, owns the container's stdio and exit status.

The handshake (conmon's own protocol, as CRI-O drives it):

1. crib starts conmon with two inherited pipes named by _OCI_SYNCPIPE / _OCI_STARTPIPE (any fd numbers).
2. conmon blocks reading the start pipe until crib writes one byte to it. conmon forks; the parent writes
   the monitor's pid to the --conmon-pidfile and exits 0 (it is reaped by proc); the monitor runs
   `runc create`.
3. crib moves the monitor into the pod's cgroup while `runc create` runs, not before releasing conmon: on
   cgroup v1 the first write to a cgroup.procs after a quiet spell waits for an RCU grace period
   (~10 ms here: the kernel's cgroup_threadgroup_rwsem), and `runc create` makes the same kind of write for
   the container's init a few ms later; side by side the two writes share one wait instead of paying two.
   `runc create` itself (a short-lived child) stays where the daemon is; the container's processes go into
   the container's own cgroup (runc puts them there). Under a sandboxed handler conmon is placed before
   it is released, as its shim's helpers must start inside the pod's cgroup.
4. The monitor writes one JSON line to the sync pipe: {"data": <container pid>} on success, or
   {"data": -1, "message": "<runc's stderr>"} (api-version 1). crib waits for it within a bound, and
   for the placement.

Under a sandboxed handler (gVisor) conmon runs the runtime through _sandbox_shim.py, so that a container
joining its pod's sandbox still gives conmon a process to wait for.

From then on the container does not depend on crib: conmon writes the CRI log, and on exit
`<exit dir>/<id>` and `<persist dir>/exit` (and `<persist dir>/oom` after an OOM kill). A conmon that fails
half-way is killed and reaped, and whatever runc created is deleted by the caller's undo.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crib import proc
from crib.errors import DeadlineExceeded, ExternalCommandError, FailedPrecondition
from crib.runtime.runc import Runc, runtime_message

SANDBOX_SHIM = str(Path(__file__).with_name("_sandbox_shim.py"))
SHIM_START = "shim.start"  # the shim's FIFO, and the file it reports the start in (see _sandbox_shim.py)
SHIM_STARTED = "shim.started"
CONMON_PIDFILE = "conmon.pid"
CONTAINER_PIDFILE = "pidfile"
CTL_FIFO = "ctl"
ATTACH_SOCKET = "attach"
WINDOW_RESIZE = 1
REOPEN_LOGS = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Monitor:
    """Daemon-wide conmon settings."""

    conmon: str
    exit_dir: Path
    socket_dir: Path
    log_size_max: int = -1
    create_timeout: float = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """One container for conmon to create. persist_dir gets conmon's `exit` and `oom` files."""

    cid: str
    name: str
    bundle: Path
    log_path: str  # "" = no log
    runc: Runc
    terminal: bool = False
    stdin: bool = False
    stdin_once: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Created:
    pid: int
    conmon_pid: int


def argv(monitor: Monitor, launch: Launch) -> list[str]:
    """conmon's command line for `runc create` of one container (flags as conmon 2.x documents them)."""
    runtime = [launch.runc.path, "--root=" + launch.runc.root, *launch.runc.global_args]
    if launch.runc.sandboxed:  # conmon's runtime is the shim, which runs the real one (module note there)
        runtime = [sys.executable, "-I", "-S", SANDBOX_SHIM, *runtime]
    args = [monitor.conmon, "--api-version", "1",
            "-c", launch.cid, "-u", launch.cid, "-n", launch.name,
            "-r", runtime[0], *(a for arg in runtime[1:] for a in ("--runtime-arg", arg)),
            "-b", str(launch.bundle), "-p", str(launch.bundle / CONTAINER_PIDFILE),
            "-P", str(launch.bundle / CONMON_PIDFILE), "--persist-dir", str(launch.bundle),
            "--exit-dir", str(monitor.exit_dir), "--socket-dir-path", str(monitor.socket_dir),
            "--log-level", "error"]
    if launch.log_path:
        args += ["-l", "k8s-file:" + launch.log_path]
    else:
        args += ["-l", "none:"]
    if monitor.log_size_max > 0:
        args += ["--log-size-max", str(max(monitor.log_size_max, 8192))]
    if launch.terminal:
        args.append("-t")
    if launch.stdin:
        args.append("-i")
        if not launch.stdin_once:
            args.append("--leave-stdin-open")
    return args


async def create(monitor: Monitor, launch: Launch, place: Callable[[int], None]) -> Created:
    """Start conmon for launch, release it, place(pid) its monitor into its cgroup while `runc create` runs
    (step 3 of the module note), and wait for the container pid.

    Raises:
        ExternalCommandError: conmon or runc failed; the message carries runc's own words.
        DeadlineExceeded: no answer on the sync pipe within monitor.create_timeout (conmon was killed).
    """
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    start_r, start_w = os.pipe2(os.O_CLOEXEC)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "_OCI_SYNCPIPE": str(sync_w), "_OCI_STARTPIPE": str(start_r)}
    try:
        child = await proc.start(argv(monitor, launch), env=env, cwd=str(launch.bundle),
                                 pass_fds=(sync_w, start_r))
    except BaseException:
        for fd in (sync_r, sync_w, start_r, start_w):
            os.close(fd)
        raise
    os.close(sync_w)
    os.close(start_r)
    placing: asyncio.Future[None] | None = None
    try:
        try:
            if launch.runc.sandboxed:  # the shim's helpers must start in the pod's cgroup (module note)
                place(child.pid)
            os.write(start_w, b"0")
        finally:
            os.close(start_w)
        # The parent conmon exits as soon as it has forked the monitor and written its pid file.
        await child.finish(timeout=monitor.create_timeout, drain_after_exit=1.0)
        monitor_pid = read_pid(launch.bundle / CONMON_PIDFILE)
        if not launch.runc.sandboxed and monitor_pid > 0:  # no pid file: the sync pipe says what failed
            placing = asyncio.ensure_future(asyncio.to_thread(place, monitor_pid))
        try:
            message = await _read_sync(sync_r, monitor.create_timeout, launch.cid)
        except BaseException:
            if placing is not None:  # let the placement end first; the sync pipe's failure is the one told
                await asyncio.wait({placing})
            raise
        if placing is not None:
            await placing  # conmon is killed below if it could not be placed
        elif not launch.runc.sandboxed and _created(message) > 0:  # the pid file came late (or never)
            monitor_pid = read_pid(launch.bundle / CONMON_PIDFILE)
            if monitor_pid <= 0:
                raise ExternalCommandError(f"conmon wrote no pid file for container {launch.name!r}",
                                           argv=list(child.argv))
            await asyncio.to_thread(place, monitor_pid)
    except BaseException:
        await child.kill()
        _kill_monitor(launch.bundle)
        raise
    finally:
        os.close(sync_r)
    pid = _created(message)
    if pid <= 0:
        _kill_monitor(launch.bundle)
        text = runtime_message(str(message.get("message", ""))) or "no error message"
        raise ExternalCommandError(f"{os.path.basename(launch.runc.path)} create failed for container "
                                   f"{launch.name!r}: {text}", argv=list(child.argv), stderr=text)
    return Created(pid=pid, conmon_pid=read_pid(launch.bundle / CONMON_PIDFILE))


def _created(message: dict[str, object]) -> int:
    """The container pid of a sync message, -1 when it reports a failure."""
    raw = message.get("data", -1)
    return raw if isinstance(raw, int) else -1


async def _read_sync(fd: int, timeout: float, cid: str) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    buf = bytearray()
    done: asyncio.Future[None] = loop.create_future()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        buf.extend(chunk)
        if (not chunk or b"\n" in buf) and not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        async with asyncio.timeout(timeout):
            await done
    except TimeoutError:
        raise DeadlineExceeded(f"conmon did not report container {cid} created within {timeout:g}s "
                               "(runtime.create_timeout)") from None
    finally:
        loop.remove_reader(fd)
    line = bytes(buf).split(b"\n", 1)[0]
    if not line:
        raise ExternalCommandError(f"conmon exited without reporting container {cid}")
    try:
        data: dict[str, object] = json.loads(line)
    except ValueError as exc:
        raise ExternalCommandError(f"conmon sent an unreadable sync message: {line[:200]!r}") from exc
    return data


def read_pid(path: Path) -> int:
    """A pid file's pid, 0 if it is missing or unreadable."""
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _kill_monitor(bundle: Path) -> None:
    pid = read_pid(bundle / CONMON_PIDFILE)
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_monitor(bundle: Path) -> None:
    """SIGKILL the conmon of a bundle (undo of a failed create; conmon has no child to reap for us)."""
    _kill_monitor(bundle)


def _control(bundle: Path, kind: int, height: int, width: int) -> bool:
    """One line on conmon's control FIFO ("<type> <height> <width>"); False if conmon is gone."""
    try:
        fd = os.open(bundle / CTL_FIFO, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, f"{kind} {height} {width}\n".encode())
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def reopen_log(bundle: Path) -> bool:
    """Ask conmon to reopen the container's log file (after kubelet rotated it); False if conmon is gone."""
    return _control(bundle, REOPEN_LOGS, 0, 0)


def resize(bundle: Path, width: int, height: int) -> bool:
    """Resize the container's terminal (conmon owns its master); False if conmon is gone."""
    if width <= 0 or height <= 0:
        return True
    return _control(bundle, WINDOW_RESIZE, height, width)


class Attachment:
    """A connection to conmon's attach socket: the container's stdio while it lasts.

    conmon sends each chunk of output as one packet prefixed by its stream (2 stdout, 3 stderr) and
    writes every packet it receives to the container's stdin. When this connection ends (EOF), conmon
    closes the container's stdin if it was started without --leave-stdin-open (stdin_once).
    """

    def __init__(self, sock: socket.socket, bundle: Path, *, stdin_once: bool, tty: bool) -> None:
        self.sock = sock
        self.bundle = bundle
        self.stdin_once = stdin_once
        self.tty = tty

    def resize(self, width: int, height: int) -> None:
        if self.tty:
            resize(self.bundle, width, height)

    def close(self) -> None:
        self.sock.close()


def attach(bundle: Path, *, stdin_once: bool, tty: bool) -> Attachment:
    """Connect to the attach socket conmon serves in the bundle (SOCK_SEQPACKET, non-blocking).

    The socket is reached through /proc/self/fd/<bundle fd>/attach: a bundle path can be longer than a
    unix socket address allows (conmon binds it the same way).

    Raises:
        FailedPrecondition: conmon does not serve the socket (the container's monitor is gone).
    """
    dir_fd = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dir_fd}/{ATTACH_SOCKET}")
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise FailedPrecondition(f"cannot attach: conmon's attach socket in {bundle} does not answer "
                                 f"({exc.strerror or exc}); is the container's monitor running?") from exc
    finally:
        os.close(dir_fd)
    return Attachment(sock, bundle, stdin_once=stdin_once, tty=tty)


async def shim_start(bundle: Path, *, timeout: float) -> bool:
    """Start a container that joins its pod's sandbox through its shim (_sandbox_shim.py); False when the
    bundle has no shim waiting (any other container: the caller runs `<runtime> start` itself).

    Raises:
        ExternalCommandError: the runtime's start failed (its message), or the shim is gone.
        DeadlineExceeded: the shim did not report within timeout.
    """
    fifo = bundle / SHIM_START
    if not fifo.exists():
        return False
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:  # ENXIO: nobody reads it, the shim died
        raise ExternalCommandError(f"the sandbox shim of container {bundle.name} is gone ({exc.strerror}); "
                                   "remove the container") from exc
    try:
        os.write(fd, b"s")
    finally:
        os.close(fd)
    report = bundle / SHIM_STARTED
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not report.exists():
        if loop.time() > deadline:
            raise DeadlineExceeded(f"the sandbox shim of container {bundle.name} did not report its start "
                                   f"within {timeout:g}s")
        await asyncio.sleep(0.01)
    code, _, log = report.read_text(errors="replace").partition("\n")
    if code.strip() != "0":
        messages = [str(json.loads(line).get("msg", "")) for line in log.splitlines() if line.startswith("{")]
        text = "; ".join(m for m in messages if m) or log.strip()[-500:] or f"exit status {code.strip()}"
        raise ExternalCommandError(f"starting container {bundle.name} in its pod's sandbox failed: {text}",
                                   stderr=text)
    return True


def shim_abort(bundle: Path) -> None:
    """Tell a waiting shim that its container is being removed (it exits at once); idempotent."""
    with contextlib.suppress(OSError):
        fd = os.open(bundle / SHIM_START, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)


def monitor_alive(bundle: Path, cid: str = "") -> bool:
    """Whether the conmon recorded in bundle still runs (and is a conmon, not a recycled pid; with cid, the
    conmon of that container: its command line names it)."""
    pid = read_pid(bundle / CONMON_PIDFILE)
    if pid <= 0:
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"conmon" in args[0] and (not cid or cid.encode() in args)


__all__ = ["CONMON_PIDFILE", "Attachment", "Created", "Launch", "Monitor", "argv", "attach", "create",
           "kill_monitor", "monitor_alive", "read_pid", "reopen_log", "resize", "shim_abort", "shim_start"]
