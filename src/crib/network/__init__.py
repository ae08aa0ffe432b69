"""Pod networking through CNI.

The types and the Protocol below are the contract between the sandbox lifecycle (which calls them) and the
CNI manager (which implements them). `NoNetwork` stands in until the CNI manager is wired into the daemon:
it gives every pod a network namespace with loopback only.
"""

from crib.network.types import (
    NoNetwork,
    PodNetwork,
    PodNetworkRequest,
    PodNetworkStatus,
    PortMapping,
)

__all__ = ["NoNetwork", "PodNetwork", "PodNetworkRequest", "PodNetworkStatus", "PortMapping"]
