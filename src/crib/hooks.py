"""What the pod and container lifecycles tell node plugins: the seam NRI (crib.nri) plugs into.

The lifecycles call these at fixed points and know nothing else of plugins; NO_HOOKS does nothing, and is
what they get when NRI is off (crib.nri is then not even imported). The order of calls for one object is
the order plugins see: each call is made at the moment the step happens.

    pod(RUN)        pod set up, still CREATING (invisible to List/Status): a plugin may refuse -> raises,
                    and the caller undoes the pod, calling pod(REMOVE) in its undo
    pod(STOP)       every container stopped, the pod not yet released (it stays visible meanwhile)
    pod(REMOVE)     the pod is gone
    adjust()        spec built, container CREATING: plugins may change the spec (returned) or refuse
                    (raises); the undo of a failed creation calls container(REMOVE)
    container(...)  POST_CREATE, START (may refuse: raises), POST_START, POST_UPDATE, REMOVE
    exited()        the container's exit was recorded (however it came: stop, kill, or on its own)
    update()        UpdateContainerResources: plugins may change the resources (returned) or refuse
"""

from __future__ import annotations

import enum
import typing
from typing import Any

from crib.state.records import ContainerRecord, SandboxRecord


class PodStep(enum.Enum):
    RUN = "RunPodSandbox"
    STOP = "StopPodSandbox"
    REMOVE = "RemovePodSandbox"


class ContainerStep(enum.Enum):
    POST_CREATE = "PostCreateContainer"
    START = "StartContainer"
    POST_START = "PostStartContainer"
    POST_UPDATE = "PostUpdateContainer"
    REMOVE = "RemoveContainer"


class LifecycleHooks(typing.Protocol):
    """See the module note; only the steps documented to raise may raise."""

    async def pod(self, step: PodStep, rec: SandboxRecord) -> None:
        """A pod reached step."""

    async def container(self, step: ContainerStep, rec: ContainerRecord) -> None:
        """A container reached step."""

    def exited(self, rec: ContainerRecord) -> None:
        """A container's exit was recorded (called from the exit watcher: must not block)."""

    async def adjust(self, rec: ContainerRecord, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec to create the container with."""

    async def update(self, rec: ContainerRecord, resources: dict[str, Any]) -> dict[str, Any]:
        """The OCI linux.resources to update the container to."""


class NoHooks:
    """NRI off: every step passes through unchanged."""

    async def pod(self, step: PodStep, rec: SandboxRecord) -> None:
        return None

    async def container(self, step: ContainerStep, rec: ContainerRecord) -> None:
        return None

    def exited(self, rec: ContainerRecord) -> None:
        return None

    async def adjust(self, rec: ContainerRecord, spec: dict[str, Any]) -> dict[str, Any]:
        return spec

    async def update(self, rec: ContainerRecord, resources: dict[str, Any]) -> dict[str, Any]:
        return resources


NO_HOOKS: LifecycleHooks = NoHooks()

__all__ = ["NO_HOOKS", "ContainerStep", "LifecycleHooks", "NoHooks", "PodStep"]
