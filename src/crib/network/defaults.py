"""The network crib writes when a node has none: bridge + host-local + portmap (+ extras) + loopback.

The file carries a marker key (`crib.dev/generated`); as long as it is there, crib owns the file and
rewrites it when kubelet hands over a pod CIDR (UpdateRuntimeConfig). Removing the key makes the file the
operator's. host-local keeps its leases under crib's root (`<root>/cni/networks`), not in the global
/var/lib/cni, so that everything the default network allocates is crib's to account for and clean.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crib.system import atomic

NETWORK_NAME = "crib"
FILE_NAME = "10-crib.conflist"
MARKER = "crib.dev/generated"
POD_CIDR_KEY = "crib.dev/podCIDR"
CNI_VERSION = "1.0.0"  # what containernetworking-plugins 1.x speak (1.1.0 came with plugins 1.5)


def parse_subnets(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """"10.88.0.0/16" or "10.88.0.0/16,fd88::/64" (one per family at most), IPv4 first.

    Raises:
        ValueError: not a subnet, host bits set, or two subnets of the same family.
    """
    nets = [ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip()]
    if not nets:
        raise ValueError("no subnet given")
    for version in (4, 6):
        if len([n for n in nets if n.version == version]) > 1:
            raise ValueError(f"{text!r} has more than one IPv{version} subnet; give one per family")
    return sorted(nets, key=lambda n: n.version)


def render(*, subnets: str, bridge: str, data_dir: str, extra_plugins: Sequence[str] = (),
           pod_cidr: str = "") -> dict[str, Any]:
    """The default conflist as a JSON object; `pod_cidr` (kubelet's, if any) is remembered in the file."""
    nets = parse_subnets(subnets)
    ranges = [[{"subnet": str(n)}] for n in nets]
    routes = [{"dst": "0.0.0.0/0" if n.version == 4 else "::/0"} for n in nets]
    plugins: list[dict[str, Any]] = [
        {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": ranges, "routes": routes, "dataDir": data_dir},
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]
    if "firewall" in extra_plugins:
        plugins.append({"type": "firewall", "backend": "iptables"})
    if "tuning" in extra_plugins:
        plugins.append({"type": "tuning"})
    if "bandwidth" in extra_plugins:
        plugins.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    plugins.append({"type": "loopback"})
    doc: dict[str, Any] = {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        MARKER: "written by crib because no CNI network config existed; remove this key to keep your edits",
    }
    if pod_cidr:
        # kubelet sends its pod CIDR once; a restarted crib must not fall back to default_subnet.
        doc[POD_CIDR_KEY] = pod_cidr
    doc["plugins"] = plugins
    return doc


def owned_pod_cidr(path: Path) -> str | None:
    """None unless path is a conflist crib wrote and nobody claimed since; then the pod CIDR it records."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or MARKER not in doc:
        return None
    return str(doc.get(POD_CIDR_KEY, ""))


def write(path: Path, doc: dict[str, Any]) -> bool:
    """Write doc to path atomically (same directory, fsync, rename); False when the content is unchanged."""
    data = (json.dumps(doc, indent=2) + "\n").encode()
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    atomic.write_atomic(path, data, durable=True)  # a dot-named temporary: never read as a config
    return True


__all__ = ["CNI_VERSION", "FILE_NAME", "MARKER", "NETWORK_NAME", "POD_CIDR_KEY", "owned_pod_cidr",
           "parse_subnets", "render", "write"]
