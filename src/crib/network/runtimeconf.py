"""Per-pod inputs of a CNI call: CNI_ARGS and the capability arguments that become `runtimeConfig`.

CNI_ARGS carry the pod's identity the way kubelet-era runtimes pass it (IgnoreUnknown first, so plugins
that do not know the K8S_* keys accept them). Capability arguments follow the CNI conventions:
`portMappings` (portmap), `bandwidth` (the bandwidth plugin, from the kubernetes.io/ingress-bandwidth and
egress-bandwidth annotations, as containerd and CRI-O read them), `dns`, and `cgroupPath`. A plugin gets
only those it declares in its `capabilities` (spec section 3, "Deriving runtimeConfig").
"""

from __future__ import annotations

import functools
import re
from typing import Any

from crib.errors import InvalidArgument
from crib.network.types import PodNetworkRequest

INGRESS_BANDWIDTH = "kubernetes.io/ingress-bandwidth"
EGRESS_BANDWIDTH = "kubernetes.io/egress-bandwidth"

# The bounds kubelet has always applied to these annotations.
_MIN_RATE = 1_000
_MAX_RATE = 10**15
# The burst containerd and CRI-O pass with an annotation rate: as large as the bandwidth plugin accepts.
BANDWIDTH_BURST = 2**32 - 1

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


@functools.cache
def _suffixes() -> dict[str | None, Any]:
    # decimal is imported here, by the first pod with a bandwidth annotation: not by every daemon.
    from decimal import Decimal

    return {
        None: Decimal(1), "m": Decimal("0.001"),
        "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
        "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
        "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
        "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
    }


def parse_quantity(text: str) -> int:
    """A Kubernetes resource quantity ("10M", "1.5Gi", "100k") as an integer, rounded up."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a quantity like \"10M\", \"512k\" or \"1Gi\"")
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(match.group(1)) * _suffixes()[match.group(2)]
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a quantity like \"10M\", \"512k\" or \"1Gi\"") from None
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def _rate(annotations: dict[str, str], key: str) -> int | None:
    if key not in annotations:
        return None
    try:
        rate = parse_quantity(annotations[key])
    except ValueError as exc:
        raise InvalidArgument(f"annotation {key}: {exc}") from None
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise InvalidArgument(f"annotation {key}={annotations[key]!r} is out of range: bandwidth must be "
                              "between 1k and 1P bits per second")
    return rate


def bandwidth(annotations: dict[str, str]) -> dict[str, int] | None:
    """The `bandwidth` capability argument from a pod's annotations, or None when it sets no limit.

    Raises:
        InvalidArgument: an annotation is not a quantity, or out of range.
    """
    ingress, egress = _rate(annotations, INGRESS_BANDWIDTH), _rate(annotations, EGRESS_BANDWIDTH)
    if ingress is None and egress is None:
        return None
    out: dict[str, int] = {}
    if ingress is not None:
        out.update(ingressRate=ingress, ingressBurst=BANDWIDTH_BURST)
    if egress is not None:
        out.update(egressRate=egress, egressBurst=BANDWIDTH_BURST)
    return out


def capability_args(request: PodNetworkRequest) -> dict[str, Any]:
    """Every capability argument crib offers for this pod (empty ones left out).

    Raises:
        InvalidArgument: a bandwidth annotation is malformed.
    """
    caps: dict[str, Any] = {}
    mappings = []
    for pm in request.port_mappings:
        if pm.host_port <= 0:
            continue  # a container port without a host port is only informational in the CRI
        entry: dict[str, Any] = {"hostPort": pm.host_port, "containerPort": pm.container_port,
                                 "protocol": pm.protocol.lower()}
        if pm.host_ip:
            entry["hostIP"] = pm.host_ip
        mappings.append(entry)
    if mappings:
        caps["portMappings"] = mappings
    bw = bandwidth(request.annotations)
    if bw:
        caps["bandwidth"] = bw
    if request.dns_servers or request.dns_searches or request.dns_options:
        caps["dns"] = {"servers": list(request.dns_servers), "searches": list(request.dns_searches),
                       "options": list(request.dns_options)}
    if request.cgroup_parent:
        caps["cgroupPath"] = request.cgroup_parent
    return caps


def cni_args(request: PodNetworkRequest) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS for the pod, in the order kubelet-era runtimes send them.

    Raises:
        InvalidArgument: a value contains ';' or '=', which would corrupt the K=V;K=V encoding.
    """
    for what, value in (("name", request.name), ("namespace", request.namespace), ("uid", request.uid)):
        if ";" in value or "=" in value:
            raise InvalidArgument(f"pod {what} {value!r} contains ';' or '=', which CNI_ARGS cannot carry; "
                                  "use a DNS-label name")
    return (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", request.namespace),
        ("K8S_POD_NAME", request.name),
        ("K8S_POD_INFRA_CONTAINER_ID", request.sandbox_id),
        ("K8S_POD_UID", request.uid),
    )


def runtime_config(plugin: dict[str, Any], caps: dict[str, Any]) -> dict[str, Any]:
    """The runtimeConfig of one plugin: the capability args it declares `true` and the runtime has."""
    declared = plugin.get("capabilities") or {}
    return {name: value for name, value in caps.items() if declared.get(name) is True}


__all__ = [
    "BANDWIDTH_BURST",
    "EGRESS_BANDWIDTH",
    "INGRESS_BANDWIDTH",
    "bandwidth",
    "capability_args",
    "cni_args",
    "parse_quantity",
    "runtime_config",
]
