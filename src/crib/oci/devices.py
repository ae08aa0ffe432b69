"""Device nodes a container gets (linux.devices) and the device-cgroup rules that let it use them.

A CRI Device names a host path, the path inside the container and cgroup permissions ("rwm" letters). The
caller stats the host path (a directory yields every device node under it, mapped to the same relative
path under container_path, as containerd does) and passes the nodes; the builder only maps them. A
privileged container also gets every node of the host's /dev and may use any device.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import defaults
from crib.oci.inputs import HostDevice
from crib.oci.mounts import clean_path


def _node(device: HostDevice, path: str) -> dict[str, Any]:
    if device.type not in ("c", "b"):
        raise ValueError(f"device {device.path}: type {device.type!r} is not \"c\" or \"b\"")
    return {"path": path, "type": device.type, "major": device.major, "minor": device.minor,
            "fileMode": device.file_mode, "uid": device.uid, "gid": device.gid}


def _rule(device: HostDevice, access: str) -> dict[str, Any]:
    return {"allow": True, "type": device.type, "major": device.major, "minor": device.minor,
            "access": access}


def _permissions(value: str, where: str) -> str:
    if not value:
        return "rwm"
    if set(value) - set("rwm") or len(set(value)) != len(value):
        raise InvalidArgument(f"{where}.permissions {value!r} must be letters of \"rwm\" (e.g. \"rw\")")
    return value


def container_devices(
    config: api.ContainerConfig,
    *,
    container: str,
    device_nodes: Mapping[str, tuple[HostDevice, ...]],
    privileged: bool,
    host_devices: tuple[HostDevice, ...],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(linux.devices, linux.resources.devices) for a container.

    Raises:
        InvalidArgument: a relative path, bad permissions, a host path that is not a device (absent from
            device_nodes).
    """
    nodes: dict[str, dict[str, Any]] = {}
    rules = defaults.allow_all_devices() if privileged else defaults.default_device_rules()
    if privileged:
        for device in host_devices:
            nodes[device.path] = _node(device, device.path)
    for index, cri in enumerate(config.devices):
        where = f"container {container!r}: devices[{index}]"
        for field, value in (("host_path", cri.host_path), ("container_path", cri.container_path)):
            if not value.startswith("/"):
                raise InvalidArgument(f"{where}.{field} {value!r} must be an absolute path")
        access = _permissions(cri.permissions, where)
        host_path, target = clean_path(cri.host_path), clean_path(cri.container_path)
        found = device_nodes.get(cri.host_path) or device_nodes.get(host_path)
        if not found:
            raise InvalidArgument(f"{where}.host_path {cri.host_path} is not a device node (or a directory "
                                  "of them) on this host; fix the path")
        for device in found:
            relative = posixpath.relpath(clean_path(device.path), host_path)
            if relative.startswith(".."):
                raise ValueError(f"device node {device.path} given for {host_path} is not under it")
            path = target if relative == "." else clean_path(posixpath.join(target, relative))
            nodes[path] = _node(device, path)
            if not privileged:
                rules.append(_rule(device, access))
    return list(nodes.values()), rules


__all__ = ["container_devices"]
