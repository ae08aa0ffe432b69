"""Pod sandboxes: pinned namespaces, pod files, cgroup parent, network; see service.py."""

from crib.sandbox.deps import PodContainers, SandboxDeps
from crib.sandbox.service import SandboxService

__all__ = ["PodContainers", "SandboxDeps", "SandboxService"]
