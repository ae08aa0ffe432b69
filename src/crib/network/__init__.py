"""Pod networking through CNI.

The types and the Protocols in types.py are the contract between the sandbox lifecycle (which calls them)
and the CNI manager (cni.py, which implements them). `NoNetwork` gives every pod a network namespace with
loopback only; unit tests of other layers use it.

Modules: conf (config files, versions), loader (one validated load), chain (ADD/DEL/CHECK/STATUS/GC of a
list), invoke (one plugin exec), results (result parsing), cache (the attachment cache), runtimeconf
(CNI_ARGS, capability args), defaults (the conflist crib writes), watch (reload on change).
"""

from crib.network.cni import IFNAME, NOT_READY_REASON, CNIManager
from crib.network.invoke import CNIPluginError
from crib.network.types import (
    NetworkAdmin,
    NoNetwork,
    PodNetwork,
    PodNetworkRequest,
    PodNetworkStatus,
    PortMapping,
)

__all__ = [
    "IFNAME",
    "NOT_READY_REASON",
    "CNIManager",
    "CNIPluginError",
    "NetworkAdmin",
    "NoNetwork",
    "PodNetwork",
    "PodNetworkRequest",
    "PodNetworkStatus",
    "PortMapping",
]
