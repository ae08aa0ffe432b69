"""Create a pod's network, IPC and UTS namespaces and pin them to files. Run as a separate process.

Run by crib.system.ns as `python -I -S _nspin_helper.py [net=PATH] [ipc=PATH] [uts=PATH] [hostname=NAME]
[sysctl=KEY=VALUE ...]` (plain argv: importing json or argparse would double the start-up time, and this
runs on every RunPodSandbox).

Why a process of its own: unshare(2) changes the calling thread's namespaces, and the daemon's threads
must never change theirs. This process unshares, configures the new namespaces from inside (hostname in
the UTS namespace, loopback up in the network namespace, namespaced sysctls through /proc/sys, which
always shows the namespaces of the process that opens it) and bind-mounts /proc/self/ns/<kind> onto the
target files, which the caller created. The mount namespace is not unshared, so the pins are visible to
the daemon, conmon and runc. The namespaces then live as long as the pins, with no process holding them.

Standard library only (it runs with -S, no site-packages), and no import of crib.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, req)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def _sysctl_path(name: str) -> str:
    # "a.b.c" is dotted; a name with a slash is already a path in which dots are literal (VLAN names).
    rel = name if "/" in name else name.replace(".", "/")
    return "/proc/sys/" + rel


def _parse(argv: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    req: dict[str, str] = {}
    sysctls: dict[str, str] = {}
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "sysctl":
            name, _, val = value.partition("=")
            sysctls[name] = val
        else:
            req[key] = value
    return req, sysctls


def main() -> int:
    req, sysctls = _parse(sys.argv[1:])
    flags = (CLONE_NEWNET if req.get("net") else 0) | (CLONE_NEWIPC if req.get("ipc") else 0) | (
        CLONE_NEWUTS if req.get("uts") else 0)
    try:
        if flags:
            _check(_libc.unshare(flags), "unshare")
        if req.get("uts"):
            name = req.get("hostname", "").encode()
            if name:
                _check(_libc.sethostname(name, len(name)), f"sethostname {name.decode()!r}")
        if req.get("net"):
            _loopback_up()
        for key, value in sorted(sysctls.items()):
            try:
                with open(_sysctl_path(key), "w") as fh:
                    fh.write(str(value))
            except OSError as exc:
                raise OSError(exc.errno, f"sysctl {key}={value}: {exc.strerror}") from None
        for kind in ("net", "ipc", "uts"):
            target = req.get(kind)
            if target:
                source = f"/proc/self/ns/{kind}".encode()
                _check(_libc.mount(source, os.fsencode(target), None, MS_BIND, None),
                       f"bind /proc/self/ns/{kind} on {target}")
    except OSError as exc:
        print(f"cannot create the pod namespaces: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
