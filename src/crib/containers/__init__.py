"""Containers: rootfs, spec, conmon/runc lifecycle, exec, stats, events; see service.py."""

from crib.containers.deps import ContainerDeps, ImageSource
from crib.containers.events import ContainerEvent, EventBus, EventKind
from crib.containers.service import ContainerService, state_of

__all__ = ["ContainerDeps", "ContainerEvent", "ContainerService", "EventBus", "EventKind", "ImageSource",
           "state_of"]
