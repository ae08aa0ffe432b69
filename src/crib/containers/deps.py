"""What the container lifecycle is built from: engines behind narrow interfaces, shared with the pods."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from crib.config import Config
from crib.containers.events import EventBus
from crib.hooks import NO_HOOKS, LifecycleHooks
from crib.metrics import Sampler
from crib.oci import HostFacts
from crib.runtime.conmon import Monitor
from crib.runtime.layout import Layout
from crib.runtime.runc import Runc
from crib.sandbox import SandboxService
from crib.state.pending import KeyedLocks
from crib.state.records import ImageRecord
from crib.state.store import RuntimeStore
from crib.system.cgroups import Cgroups


class ImageSource(typing.Protocol):
    """What creating a container needs of the image service."""

    def resolve(self, ref: str) -> ImageRecord:
        """The local image a reference, id or digest names; raises NotFound when absent."""

    def layer_dirs(self, image: ImageRecord) -> list[Path]:
        """The image's unpacked layer directories, lowest first."""


@dataclass(slots=True, kw_only=True)
class ContainerDeps:
    cfg: Config
    layout: Layout
    store: RuntimeStore
    cgroups: Cgroups
    monitor: Monitor
    runcs: dict[str, Runc]
    locks: KeyedLocks
    images: ImageSource
    host: HostFacts
    sandboxes: SandboxService
    events: EventBus
    sampler: Sampler
    hooks: LifecycleHooks = NO_HOOKS  # node plugins (NRI); NO_HOOKS when off


__all__ = ["ContainerDeps", "ImageSource"]
