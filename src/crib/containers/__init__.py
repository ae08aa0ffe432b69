"""Containers: rootfs, spec, conmon/runc lifecycle, exec, stats, events; see service.py."""

from crib.containers.deps import ContainerDeps, ImageSource
from crib.containers.events import ContainerEvent, EventBus, EventKind
from crib.containers.service import ContainerService, state_of
from crib.containers.usage import ContainerUsage, InterfaceUsage, PodUsage

__all__ = ["ContainerDeps", "ContainerEvent", "ContainerService", "ContainerUsage", "EventBus", "EventKind",
           "ImageSource", "InterfaceUsage", "PodUsage", "state_of"]
