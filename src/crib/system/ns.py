"""Pinned namespaces: a pod's network, IPC and UTS namespaces (and optionally a user namespace owning them)
kept alive by bind mounts on files.

No pause process holds them. One long-lived, single-threaded helper process (`_nshelper.py`, started on
first use, restarted when it died) forks a child per request that unshares, sets the pod up from inside,
and whose /proc/<pid>/ns/<kind> the helper bind-mounts onto files under runroot; its module note has the
steps, including the user namespace's (created first, maps written from the host side, the others created
inside it, every pin made from the host user namespace). Unpinning is umount + unlink; the kernel frees a
namespace once nothing (pin, process, owned namespace) refers to it.

Bounds: the helper answers each request within its timeout (it kills a child that stalls); should the
helper itself stall, pin() kills it once the timeout is over and the next request starts a new one. A
request that fails or is cancelled leaves no mount on its targets. The daemon talks to the helper one
request at a time (each is a fork and a few syscalls, ~1-2 ms); the helper exits when the daemon's end
of its socket closes, so a restarted daemon never meets its predecessor's helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from crib import proc
from crib.errors import DeadlineExceeded, ExternalCommandError, InvalidArgument
from crib.system import mount

_HELPER = str(Path(__file__).with_name("_nshelper.py"))
PIN_TIMEOUT = 20.0
# The helper answers before the daemon gives up on it: its own deadline is this share of the request's.
_HELPER_SHARE = 0.75
NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1): a file descriptor of the user namespace owning a namespace


@dataclass(frozen=True, slots=True, kw_only=True)
class PinRequest:
    """Which namespaces to create (a None path = keep the host's) and how to set them up.

    user: pin target of a new user namespace owning the others; uid_map and gid_map are then required,
    as written to /proc/<pid>/uid_map ("<id inside> <id on the host> <length>" lines).
    """

    net: Path | None = None
    ipc: Path | None = None
    uts: Path | None = None
    hostname: str = ""
    sysctls: Mapping[str, str] | None = None
    user: Path | None = None
    uid_map: str = ""
    gid_map: str = ""


def targets(req: PinRequest) -> list[Path]:
    """The pin targets of a request, the owning user namespace first."""
    return [p for p in (req.user, req.net, req.ipc, req.uts) if p is not None]


def prepare_targets(req: PinRequest) -> list[Path]:
    """Create the empty files the pins are mounted on; returns them (the caller registers unpin undos)."""
    made = []
    for path in targets(req):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_EXCL, 0o444)
        os.close(fd)
        made.append(path)
    return made


def _message(req: PinRequest, rid: int, timeout: float) -> bytes:
    """The helper's request message (see _nshelper.py); checks what the wire format cannot carry."""
    if req.user is not None and not (req.uid_map.strip() and req.gid_map.strip()):
        raise InvalidArgument(f"user namespace {req.user}: both uid_map and gid_map are needed")
    if req.user is None and (req.uid_map or req.gid_map):
        raise InvalidArgument("uid_map/gid_map given without a user namespace to pin (PinRequest.user)")
    fields = [f"id={rid}", f"timeout={timeout * _HELPER_SHARE:.3f}"]
    if req.user is not None:
        fields += [f"user={req.user}", f"uid_map={req.uid_map}", f"gid_map={req.gid_map}"]
    fields += [f"{kind}={path}" for kind, path in (("net", req.net), ("ipc", req.ipc), ("uts", req.uts))
               if path is not None]
    if req.uts is not None and req.hostname:
        fields.append(f"hostname={req.hostname}")
    for key, value in sorted((req.sysctls or {}).items()):
        if "=" in key:
            raise InvalidArgument(f"sysctl name {key!r} contains '='")
        fields.append(f"sysctl={key}={value}")
    if any("\0" in f for f in fields):
        raise InvalidArgument("a namespace request field (hostname, sysctl, map or path) contains a NUL byte")
    return "\0".join(fields).encode()


class _HelperGone(ExternalCommandError):
    """The helper was dead or died before answering: the request may be tried again on a new one."""


class _Helper:
    """The daemon's end of the namespace helper: start on demand, one request at a time, kill on trouble."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._next_id = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def _serialized(self) -> asyncio.Lock:
        # asyncio locks belong to one loop; tests run pins from several, the daemon from one.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def start(self) -> None:
        """Start the helper if none is alive (a dead one is reaped first)."""
        if self._process is not None and self._process.poll() is None:
            return
        self.stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = proc.spawn_resident([sys.executable, "-I", "-S", _HELPER, str(theirs.fileno())],
                                                pass_fds=[theirs.fileno()], env={})
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours

    def stop(self) -> str:
        """Close the socket, kill and reap the helper; returns what it said on stderr (idempotent)."""
        said = ""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            proc.stop_resident(self._process)
            said = proc.resident_stderr(self._process)
            self._process = None
        return said

    async def call(self, message: bytes, rid: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        async with self._serialized():
            self.start()
            assert self._sock is not None
            sock = self._sock
            try:
                async with asyncio.timeout(timeout):
                    await loop.sock_sendall(sock, message)
                    data = await loop.sock_recv(sock, 1 << 16)
            except TimeoutError:
                self.stop()
                raise DeadlineExceeded(f"the namespace helper did not answer within {timeout:g}s; it was "
                                       "killed and the next request starts a new one") from None
            except OSError as exc:  # a helper that died (killed, or dying while found alive) broke the socket
                said = self.stop()
                raise _HelperGone(f"the namespace helper died ({exc.strerror or exc})"
                                  + (f": {said}" if said else ""), stderr=said) from exc
            except BaseException:  # cancelled: the exchange is out of step
                self.stop()
                raise
            if not data:
                said = self.stop()
                raise _HelperGone("the namespace helper died" + (f": {said}" if said else ""), stderr=said)
            answered, _, error = data.decode(errors="replace").partition("\0")
            if answered != str(rid):
                self.stop()
                raise ExternalCommandError(f"the namespace helper answered request {answered} for {rid}")
            if error:
                raise ExternalCommandError(f"cannot create the pod namespaces: {error}")

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id


_helper = _Helper()


async def pin(req: PinRequest, *, timeout: float = PIN_TIMEOUT) -> None:
    """Create the namespaces and pin them on the (existing, empty) target files.

    On any failure (or cancellation) no target is left mounted; the files stay for the caller's undo.

    Raises:
        InvalidArgument: a user namespace without both maps, or maps without a user namespace.
        ExternalCommandError: a step failed (the message says which: unshare, a map, hostname, a sysctl,
            a bind mount), or the helper died.
        DeadlineExceeded: the helper did not answer within timeout (it was killed).
    """
    rid = _helper.next_id()
    message = _message(req, rid, timeout)
    if not targets(req):
        return
    deadline = time.monotonic() + timeout
    for attempt in (1, 2):
        try:
            await _helper.call(message, rid, max(deadline - time.monotonic(), 1.0))
            return
        except _HelperGone:  # one more try on a new helper (the old one was found dead, or died)
            _unmount(req)
            if attempt == 2:
                raise
        except BaseException:
            _unmount(req)
            raise


def _unmount(req: PinRequest) -> None:
    for target in targets(req):
        with contextlib.suppress(OSError):
            mount.umount_all(target)


def start_helper() -> None:
    """Start the helper ahead of the first pod (the daemon calls it at start-up: a first RunPodSandbox
    then does not wait for an interpreter to start)."""
    _helper.start()


def stop_helper() -> None:
    """Stop the helper (daemon shutdown, tests); the next pin() starts a new one."""
    _helper.stop()


def helper_pid() -> int | None:
    """The live helper's pid, or None (for tests and diagnostics)."""
    return _helper.pid


def unpin(path: str | os.PathLike[str]) -> None:
    """Unmount and remove a pinned namespace file; idempotent."""
    mount.umount_all(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_pinned(path: str | os.PathLike[str]) -> bool:
    """Whether path is a live namespace pin (nsfs mounted on it)."""
    try:
        return os.stat(path).st_ino != 0 and mount.is_mountpoint(path)
    except OSError:
        return False


def identity(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(st_dev, st_ino) of a namespace file: two paths name the same namespace when these are equal."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def owner(path: str | os.PathLike[str]) -> tuple[int, int]:
    """identity() of the user namespace that owns the namespace pinned at path (ioctl NS_GET_USERNS).

    Raises:
        OSError: path is not a namespace file, or its owner is outside this process's user namespace.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        owner_fd = fcntl.ioctl(fd, NS_GET_USERNS)
    finally:
        os.close(fd)
    try:
        st = os.fstat(owner_fd)
        return st.st_dev, st.st_ino
    finally:
        os.close(owner_fd)


__all__ = ["PIN_TIMEOUT", "PinRequest", "helper_pid", "identity", "is_pinned", "owner", "pin",
           "prepare_targets", "start_helper", "stop_helper", "targets", "unpin"]
