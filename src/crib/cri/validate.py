"""Request checks that need no state: what is missing or malformed is refused before any work starts."""

from __future__ import annotations

from typing import Any

from crib.errors import InvalidArgument


def _need(value: str, what: str) -> None:
    if not value:
        raise InvalidArgument(f"{what} is empty; it is required")


def run_pod_sandbox(request: Any) -> None:
    if not request.HasField("config"):
        raise InvalidArgument("RunPodSandbox: config is missing")
    meta = request.config.metadata
    if not request.config.HasField("metadata"):
        raise InvalidArgument("RunPodSandbox: config.metadata is missing; the pod needs a name")
    _need(meta.name, "config.metadata.name")
    if request.config.hostname and len(request.config.hostname) > 64:
        raise InvalidArgument(f"config.hostname {request.config.hostname!r} is longer than 64 characters")


def create_container(request: Any) -> None:
    _need(request.pod_sandbox_id, "pod_sandbox_id")
    if not request.HasField("config"):
        raise InvalidArgument("CreateContainer: config is missing")
    config = request.config
    if not config.HasField("metadata"):
        raise InvalidArgument("CreateContainer: config.metadata is missing; the container needs a name")
    _need(config.metadata.name, "config.metadata.name")
    if not config.HasField("image") or not config.image.image:
        raise InvalidArgument(f"container {config.metadata.name!r}: config.image.image is empty; "
                              "name the image")
    if not request.HasField("sandbox_config"):
        raise InvalidArgument(f"container {config.metadata.name!r}: sandbox_config is missing; pass the "
                              "pod's PodSandboxConfig as given to RunPodSandbox")


def container_id(value: str) -> None:
    _need(value, "container_id")


def sandbox_id(value: str) -> None:
    _need(value, "pod_sandbox_id")


def exec_sync(request: Any) -> None:
    _need(request.container_id, "container_id")
    if not request.cmd or not request.cmd[0]:
        raise InvalidArgument("ExecSync: cmd is empty; give the command to run")
    if request.timeout < 0:
        raise InvalidArgument(f"ExecSync: timeout {request.timeout} is negative")


def _streams(call: str, request: Any) -> None:
    if request.tty and request.stderr:
        raise InvalidArgument(f"{call}: tty and stderr cannot both be true (a terminal has one output); "
                              "set stderr=false")
    if not (request.stdin or request.stdout or request.stderr):
        raise InvalidArgument(f"{call}: one of stdin, stdout or stderr must be true")


def exec_(request: Any) -> None:
    _need(request.container_id, "container_id")
    if not request.cmd or not request.cmd[0]:
        raise InvalidArgument("Exec: cmd is empty; give the command to run")
    _streams("Exec", request)


def attach(request: Any) -> None:
    _need(request.container_id, "container_id")
    _streams("Attach", request)


def port_forward(request: Any) -> None:
    _need(request.pod_sandbox_id, "pod_sandbox_id")
    for port in request.port:
        if not 0 < port < 65536:
            raise InvalidArgument(f"PortForward: port {port} is not between 1 and 65535")


def update_pod_resources(request: Any) -> None:
    _need(request.pod_sandbox_id, "pod_sandbox_id")
    if not request.HasField("resources"):
        raise InvalidArgument("UpdatePodSandboxResources: resources is missing; give the pod's new "
                              "LinuxContainerResources (overhead is optional)")


__all__ = ["attach", "container_id", "create_container", "exec_", "exec_sync", "port_forward",
           "run_pod_sandbox", "sandbox_id", "update_pod_resources"]
