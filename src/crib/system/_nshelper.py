"""The namespace helper: one long-lived, single-threaded process that forks a child per pod.

Started once by crib.system.ns as `python -I -S _nshelper.py <fd>` with a SOCK_SEQPACKET socket on that fd;
standard library only, no import of crib (it runs with -S, without site-packages), and only C modules (no
json, no socket.py: every megabyte of this process is paid on every node). Each request is one message of
NUL-separated `key=value` fields (ids, paths, maps and sysctls contain no NUL; the daemon checks):

    id=<n> timeout=<s> [user=<path> uid_map=<text> gid_map=<text>] [net=<path>] [ipc=<path>] [uts=<path>]
    [hostname=<name>] [sysctl=<key>=<value> ...]

and is answered with one message: `<id>` on success, `<id>\0<error text>` on failure.

Why a process of its own, and why fork: unshare(2) changes the calling thread's namespaces, and the daemon's
threads must never change theirs; a new user namespace even needs a single-threaded caller. Forking this
small single-threaded process costs well under a millisecond, where starting an interpreter per pod cost
~20 ms. For each request a forked child, in turn:

    1. (user namespace only) unshare(CLONE_NEWUSER), say "U"; this process writes the child's uid_map and
       gid_map from the host side and answers "M"; the child becomes root inside if the maps map 0.
    2. unshare(net | IPC | UTS): created inside the new user namespace when there is one, so owned by it.
    3. sets the pod up from inside: hostname (UTS), loopback up (net), namespaced sysctls through /proc/sys
       (which always shows the namespaces of the process that opens it); says "R" (or "E<why>").

Then this process, still in the host user and mount namespaces (a process inside a new user namespace
cannot mount in the host's mount namespace), bind-mounts /proc/<child>/ns/<kind> onto each target file,
SIGKILLs and reaps the child. The namespaces then live as long as the pins. The child dies with this
process (PR_SET_PDEATHSIG), and this process exits when the daemon's end of the socket closes. A step that
fails undoes the mounts of the request and answers its error; a child that does not answer before the
request's deadline is killed and its request answered with an error: nothing waits for ever.
"""

from __future__ import annotations

import _socket
import ctypes
import fcntl
import os
import select
import struct
import sys
import time

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
SIGKILL = 9  # the constant, not the signal module: it imports enum, and this process stays lean
PR_SET_DUMPABLE = 4
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
KINDS = ("user", "net", "ipc", "uts")  # pinned in this order: the owner first
_FLAGS = {"net": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class Request:
    """One parsed request message (see parse()); a missing field reads as ""."""

    __slots__ = ("fields", "sysctls")

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.sysctls: dict[str, str] = {}

    def get(self, key: str) -> str:
        return self.fields.get(key, "")


class Failure(Exception):
    """A step of a request failed; the text says which and why, for the daemon's error."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise Failure(f"{what}: {os.strerror(err)}")


# ---------------------------------------------------------------------------------------------- the child


def _loopback_up() -> None:
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, req)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))
    finally:
        sock.close()


def _sysctl_path(name: str) -> str:
    # "a.b.c" is dotted; a name with a slash is already a path in which dots are literal (VLAN names).
    rel = name if "/" in name else name.replace(".", "/")
    return "/proc/sys/" + rel


def _maps_root(text: str) -> bool:
    """Whether a uid_map/gid_map text maps id 0 inside the namespace."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and int(fields[0]) == 0 and int(fields[2]) > 0:
            return True
    return False


def _become_root(req: Request) -> None:
    """Switch to root of the new user namespace where the maps allow it.

    IPC sysctls are writable by the namespace's root uid only, and files the pod setup creates belong to
    the pod's root; where 0 is not mapped the child keeps the host ids (its capabilities in the new
    namespace stay whole either way).
    """
    if _maps_root(req.get("gid_map")):
        os.setresgid(0, 0, 0)
        try:  # noqa: SIM105 - contextlib would cost this process its imports
            os.setgroups([])
        except OSError:
            pass  # /proc/<pid>/setgroups says deny: the host's groups stay, unmapped
    if _maps_root(req.get("uid_map")):
        os.setresuid(0, 0, 0)
    # A change of ids clears the death signal and the dumpable flag; both are needed (dying with the
    # helper, and the helper opening /proc/<child>/ns/*).
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    _libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)


def _set_up(req: Request, chan: _socket.socket) -> None:
    if req.get("user"):
        _check(_libc.unshare(CLONE_NEWUSER), "unshare user namespace")
        chan.send(b"U")
        if chan.recv(64) != b"M":
            raise Failure("the helper did not write the user namespace maps")
        _become_root(req)
    flags = 0
    for kind, flag in _FLAGS.items():
        if req.get(kind):
            flags |= flag
    if flags:
        _check(_libc.unshare(flags), "unshare")
    if req.get("uts") and req.get("hostname"):
        name = req.get("hostname").encode()
        _check(_libc.sethostname(name, len(name)), f"sethostname {req.get('hostname')!r}")
    if req.get("net"):
        try:
            _loopback_up()
        except OSError as exc:
            raise Failure(f"set loopback up: {exc.strerror or exc}") from None
    for key, value in sorted(req.sysctls.items()):
        try:
            fd = os.open(_sysctl_path(key), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, str(value).encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise Failure(f"sysctl {key}={value}: {exc.strerror or exc}") from None


def _child(req: Request, chan: _socket.socket, helper_pid: int) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        _libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        if os.getppid() != helper_pid:  # the helper died between fork and prctl
            os._exit(1)
        _set_up(req, chan)
        chan.send(b"R")
        chan.recv(64)  # EOF or SIGKILL once the helper pinned the namespaces
        code = 0
    except Failure as exc:
        _send_quietly(chan, b"E" + str(exc).encode())
    except BaseException as exc:  # never back into the helper's loop from a forked child
        _send_quietly(chan, b"E" + f"{type(exc).__name__}: {exc}".encode())
    os._exit(code)


def _send_quietly(chan: _socket.socket, data: bytes) -> None:
    try:  # noqa: SIM105 - contextlib would cost this process its imports
        chan.send(data[:4096])
    except OSError:
        pass


# --------------------------------------------------------------------------------------------- the helper


def _expect(chan: _socket.socket, want: bytes, deadline: float) -> None:
    """Wait for the child's next word; its error, its death and the deadline all raise Failure."""
    left = deadline - time.monotonic()
    ready, _, _ = select.select([chan], [], [], max(left, 0.0))
    if not ready:
        raise Failure("the namespace child did not answer in time and was killed")
    data = chan.recv(4096)
    if data == want:
        return
    if data.startswith(b"E"):
        raise Failure(data[1:].decode(errors="replace"))
    raise Failure("the namespace child exited unexpectedly" if not data else f"unexpected {data[:40]!r}")


def _write_map(pid: int, name: str, text: str) -> None:
    # One write(2): the kernel accepts a map once, whole.
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise Failure(f"write {name} {text.strip()!r}: {exc.strerror or exc}") from None


def _bind(source: str, target: str) -> None:
    ret = _libc.mount(source.encode(), os.fsencode(target), None, MS_BIND, None)
    _check(ret, f"bind {source} on {target}")


def pin(req: Request, serve_fd: int) -> None:
    """Carry out one request (see the module note); raises Failure with the reason."""
    deadline = time.monotonic() + float(req.get("timeout") or 10.0)
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    helper_pid = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's side, reported through the socket
        os.close(serve_fd)
        ours.close()
        _child(req, theirs, helper_pid)
    theirs.close()
    mounted: list[str] = []
    try:
        if req.get("user"):
            _expect(ours, b"U", deadline)
            _write_map(pid, "uid_map", req.get("uid_map"))
            _write_map(pid, "gid_map", req.get("gid_map"))
            ours.send(b"M")
        _expect(ours, b"R", deadline)
        for kind in KINDS:
            target = req.get(kind)
            if target:
                _bind(f"/proc/{pid}/ns/{kind}", target)
                mounted.append(target)
    except BaseException:
        for target in reversed(mounted):
            _libc.umount2(os.fsencode(target), MNT_DETACH)
        raise
    finally:
        ours.close()
        try:  # noqa: SIM105 - contextlib would cost this process its imports
            os.kill(pid, SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def parse(data: bytes) -> Request:
    """One request message -> Request (`sysctl=<key>=<value>` fields go to .sysctls)."""
    req = Request()
    for field in data.decode().split("\0"):
        key, _, value = field.partition("=")
        if key == "sysctl":
            name, _, val = value.partition("=")
            req.sysctls[name] = val
        else:
            req.fields[key] = value
    return req


def serve(fd: int) -> int:
    """Answer requests until the daemon closes its end."""
    chan = _socket.socket(fileno=fd)
    while True:
        data = chan.recv(1 << 16)
        if not data:
            return 0
        req = Request()
        try:
            req = parse(data)
            pin(req, fd)
            reply = req.get("id")
        except Failure as exc:
            reply = f"{req.get('id')}\0{exc}"
        except Exception as exc:
            reply = f"{req.get('id')}\0{type(exc).__name__}: {exc}"
        chan.send(reply.encode(errors="replace"))


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
