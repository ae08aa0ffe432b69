"""What the sandbox lifecycle is built from: the node's engines behind narrow interfaces."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field

from crib.config import Config
from crib.hooks import NO_HOOKS, LifecycleHooks
from crib.network import PodNetwork
from crib.oci import HostFacts
from crib.runtime.conmon import Monitor
from crib.runtime.handlers import HandlerFeatures
from crib.runtime.layout import Layout
from crib.runtime.runc import Runc
from crib.state.pending import KeyedLocks
from crib.state.store import RuntimeStore
from crib.system.cgroups import Cgroups


class PodContainers(typing.Protocol):
    """What a pod's stop and removal need of the container service."""

    async def stop_all(self, sandbox_id: str, grace: float) -> None:
        """Stop every container of the pod: stop signal, grace, then SIGKILL."""

    async def remove_all(self, sandbox_id: str) -> None:
        """Remove every container of the pod (killing those still running)."""


class _NoContainers:
    async def stop_all(self, sandbox_id: str, grace: float) -> None:
        return None

    async def remove_all(self, sandbox_id: str) -> None:
        return None


@dataclass(slots=True, kw_only=True)
class SandboxDeps:
    cfg: Config
    layout: Layout
    store: RuntimeStore
    cgroups: Cgroups
    network: PodNetwork
    monitor: Monitor
    runcs: dict[str, Runc]
    locks: KeyedLocks
    host: HostFacts
    features: dict[str, HandlerFeatures] = field(default_factory=dict)  # per handler, probed at start-up
    leaving: set[str] = field(default_factory=set)  # pods past the point of handing over cgroups
    containers: PodContainers = _NoContainers()  # noqa: RUF009 - stateless stand-in until wired
    hooks: LifecycleHooks = NO_HOOKS  # node plugins (NRI); NO_HOOKS when off

    def runc(self, handler: str) -> Runc:
        return self.runcs[handler]


__all__ = ["PodContainers", "SandboxDeps"]
