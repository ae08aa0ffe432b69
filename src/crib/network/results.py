"""CNI ADD results: parsed into crib's terms, and the pod's IPs chosen from them.

Results of spec versions 0.3.0 to 1.1.0 share one shape (0.3.x/0.4.0 add a "version" key to each IP,
which is ignored). The raw JSON object is what travels on as prevResult and into the cache; this parse
exists only to answer "which IPs does the pod have".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ResultInvalid(ValueError):
    """A plugin's result does not have the shape the spec requires."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class IPConfig:
    address: str  # CIDR, e.g. "10.88.0.5/16"
    gateway: str = ""
    interface: int | None = None

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    dst: str
    gw: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    cni_version: str = ""
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = DNS()


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ResultInvalid(f"{where} must be a list of strings")
    return tuple(value)


def _list(doc: Mapping[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ResultInvalid(f"\"{key}\" must be a list")
    return value


def parse(doc: Any) -> Result:
    """Parse a result object (already decoded from JSON).

    Raises:
        ResultInvalid: the object is not a result of a supported version.
    """
    if not isinstance(doc, dict):
        raise ResultInvalid("a result must be a JSON object")
    if "ip4" in doc or "ip6" in doc:
        raise ResultInvalid("0.1.0/0.2.0 results (ip4/ip6) are not supported; use cniVersion 0.3.0 or newer")
    interfaces = []
    for i, item in enumerate(_list(doc, "interfaces")):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ResultInvalid(f"interfaces[{i}] must be an object with a \"name\"")
        interfaces.append(Interface(name=item["name"], mac=str(item.get("mac", "")),
                                    sandbox=str(item.get("sandbox", ""))))
    ips = []
    for i, item in enumerate(_list(doc, "ips")):
        if not isinstance(item, dict) or not isinstance(item.get("address"), str):
            raise ResultInvalid(f"ips[{i}] must be an object with an \"address\"")
        try:
            ipaddress.ip_interface(item["address"])
        except ValueError:
            raise ResultInvalid(f"ips[{i}].address {item['address']!r} is not an address in CIDR form"
                                ) from None
        index = item.get("interface")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
            raise ResultInvalid(f"ips[{i}].interface must be an index into interfaces")
        ips.append(IPConfig(address=item["address"], gateway=str(item.get("gateway", "") or ""),
                            interface=index))
    routes = []
    for i, item in enumerate(_list(doc, "routes")):
        if not isinstance(item, dict) or not isinstance(item.get("dst"), str):
            raise ResultInvalid(f"routes[{i}] must be an object with a \"dst\"")
        routes.append(Route(dst=item["dst"], gw=str(item.get("gw", "") or "")))
    raw_dns = doc.get("dns")
    raw_dns = {} if raw_dns is None else raw_dns
    if not isinstance(raw_dns, dict):
        raise ResultInvalid("\"dns\" must be an object")
    dns = DNS(nameservers=_strs(raw_dns.get("nameservers"), "dns.nameservers"),
              domain=str(raw_dns.get("domain", "") or ""),
              search=_strs(raw_dns.get("search"), "dns.search"),
              options=_strs(raw_dns.get("options"), "dns.options"))
    return Result(cni_version=str(doc.get("cniVersion", "")), interfaces=tuple(interfaces), ips=tuple(ips),
                  routes=tuple(routes), dns=dns)


def pod_ips(result: Result, ifname: str) -> tuple[str, ...]:
    """The pod's addresses, IPv4 first then IPv6, each family in result order.

    An IP counts when it belongs to the pod's interface (named `ifname`, inside a sandbox). Results of
    plugins that list no interfaces count every IP. Loopback addresses (the loopback plugin reports
    127.0.0.1) never count.
    """
    def on_pod_interface(ipc: IPConfig) -> bool:
        if ipc.interface is None or not result.interfaces:
            return True
        if ipc.interface >= len(result.interfaces):
            return False
        iface = result.interfaces[ipc.interface]
        return iface.name == ifname and bool(iface.sandbox)

    chosen = [ipc for ipc in result.ips if on_pod_interface(ipc)]
    addrs = [ipaddress.ip_interface(ipc.address).ip for ipc in chosen]
    addrs = [a for a in addrs if not a.is_loopback]
    ordered = [a for a in addrs if a.version == 4] + [a for a in addrs if a.version == 6]
    seen: dict[str, None] = {}
    for a in ordered:
        seen.setdefault(str(a), None)
    return tuple(seen)


__all__ = ["DNS", "IPConfig", "Interface", "Result", "ResultInvalid", "Route", "parse", "pod_ips"]
