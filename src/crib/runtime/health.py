"""Whether this node can run containers at all: the RuntimeReady condition.

kubelet stops doing anything with a runtime that reports RuntimeReady=false, so the check is cheap and
concrete: the binaries crib drives must be present and executable. Anything subtler shows up as the error
of the request that hits it.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass

from crib.config import Config

RUNTIME_READY = "RuntimeReady"
NETWORK_READY = "NetworkReady"


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """One entry of Status.conditions, in crib's own terms."""

    type: str
    status: bool
    reason: str = ""
    message: str = ""


def runtime_condition(cfg: Config) -> Condition:
    """RuntimeReady: conmon and the default handler's runtime binary are executable."""
    handler = cfg.runtime.handlers[cfg.runtime.default_handler]
    missing = [path for path in (handler.path, cfg.runtime.conmon) if not os.access(path, os.X_OK)]
    if missing:
        return Condition(
            type=RUNTIME_READY, status=False, reason="RuntimeBinaryMissing",
            message=f"not executable: {', '.join(missing)}; install them (make run does) or fix "
                    "runtime.conmon / runtime.handlers in the config",
        )
    return Condition(type=RUNTIME_READY, status=True)




class NetworkStatus(typing.Protocol):
    """What Health needs of the network layer: its NetworkReady condition."""

    def condition(self) -> Condition: ...


class Health:
    """The node's readiness as Status reports it: RuntimeReady, then NetworkReady."""

    def __init__(self, cfg: Config, network: NetworkStatus) -> None:
        self._cfg = cfg
        self._network = network

    def conditions(self) -> list[Condition]:
        return [runtime_condition(self._cfg), self._network.condition()]


__all__ = ["NETWORK_READY", "RUNTIME_READY", "Condition", "Health", "NetworkStatus", "runtime_condition"]
