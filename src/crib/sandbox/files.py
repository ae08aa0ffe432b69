"""The files a pod's containers bind-mount: /etc/hostname, /etc/hosts, /etc/resolv.conf.

The contents are built by pure functions (unit-tested) and written atomically (temp file + rename), so a
container starting at the same moment never reads half a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOST_HOSTS = Path("/etc/hosts")

_DEFAULT_HOSTS = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


def hosts(hostname: str, ips: Sequence[str]) -> str:
    """A pod's /etc/hosts: loopback names, then its own IPs under its hostname."""
    lines = [_DEFAULT_HOSTS.rstrip("\n")]
    lines += [f"{ip}\t{hostname}" for ip in ips if hostname]
    return "\n".join(lines) + "\n"


def resolv_conf(servers: Sequence[str], searches: Sequence[str], options: Sequence[str]) -> str:
    """resolv.conf from a CRI DNSConfig."""
    out = [f"nameserver {s}" for s in servers]
    if searches:
        out.append("search " + " ".join(searches))
    if options:
        out.append("options " + " ".join(options))
    return "\n".join(out) + "\n" if out else ""


def host_text(path: Path) -> str:
    """A host file's text, "" if the host has none."""
    try:
        return path.read_text()
    except OSError:
        return ""


__all__ = ["HOST_HOSTS", "HOST_RESOLV_CONF", "host_text", "hosts", "resolv_conf"]
