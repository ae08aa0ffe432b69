"""Annotation keys crib writes into every config.json it builds.

The keys are the ones containerd's CRI plugin writes (``io.kubernetes.cri.*``), on purpose: runc hooks, NRI
plugins, Kata and gVisor read them to tell a pod's infra process from its containers and to find the pod a
container belongs to. Inventing crib-only names would make those tools blind to crib's containers.
"""

from __future__ import annotations

from collections.abc import Mapping

#: "sandbox" for a pod's infra process, "container" for a container of the pod.
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
CONTAINER_TYPE_SANDBOX = "sandbox"
CONTAINER_TYPE_CONTAINER = "container"

#: The id crib gave the pod sandbox.
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
#: The pod's name, namespace and uid from PodSandboxConfig.metadata.
SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
#: PodSandboxConfig.log_directory (infra spec only).
SANDBOX_LOG_DIRECTORY = "io.kubernetes.cri.sandbox-log-directory"

#: ContainerConfig.metadata.name (container specs only).
CONTAINER_NAME = "io.kubernetes.cri.container-name"
#: The image the container runs, as the client named it (container specs only).
IMAGE_NAME = "io.kubernetes.cri.image-name"

#: Every key above: crib sets these last, so a CRI annotation cannot spoof them.
RESERVED = frozenset({
    CONTAINER_TYPE, SANDBOX_ID, SANDBOX_NAME, SANDBOX_NAMESPACE, SANDBOX_UID, SANDBOX_LOG_DIRECTORY,
    CONTAINER_NAME, IMAGE_NAME,
})

def allowed(annotations: Mapping[str, str], patterns: tuple[str, ...]) -> dict[str, str]:
    """The annotations a handler lets into the spec: keys equal to a pattern, or starting with one that
    ends in "*" ("*" alone lets everything through)."""
    exact = {p for p in patterns if not p.endswith("*")}
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return {k: v for k, v in annotations.items() if k in exact or k.startswith(prefixes)}


__all__ = [
    "CONTAINER_NAME",
    "CONTAINER_TYPE",
    "CONTAINER_TYPE_CONTAINER",
    "CONTAINER_TYPE_SANDBOX",
    "IMAGE_NAME",
    "RESERVED",
    "SANDBOX_ID",
    "SANDBOX_LOG_DIRECTORY",
    "SANDBOX_NAME",
    "SANDBOX_NAMESPACE",
    "SANDBOX_UID",
    "allowed",
]
