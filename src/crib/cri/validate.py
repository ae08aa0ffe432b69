"""Request checks that need no state: what is missing or malformed is refused before any work starts.

Names. kubelet sends DNS-1123 names (lowercase), but critest and crictl users send upper case, long
container names (critest's run past 80 characters) and underscores, and containerd accepts them, so crib
accepts letters of either case, digits, '-', '.' and '_', starting and ending with a letter or digit, up to
253 characters. What is refused is what can only do harm: a NUL byte (every name ends up in a C string), a
'/' or a leading '.' (a name must never become a path, "../../etc"), spaces, control and non-ASCII
characters. A pod's namespace and uid may not contain '_': the pod's reserved name joins name, namespace,
uid and attempt with '_', and only this keeps that join unambiguous (kubelet's never contain one).

Hostnames follow RFC 1123 (labels of letters, digits and '-', at most 64 characters in all: the kernel's
limit), as sethostname and /etc/hosts need them; upper case is kept (critest compares case-insensitively).

No string field of a request may hold a NUL byte: each one ends up as a file name, an argv or env entry,
or a C string in runc, where NUL either cuts the value short or fails deep inside with a confusing error.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from crib.errors import InvalidArgument

MAX_NAME = 253
MAX_HOSTNAME = 64  # HOST_NAME_MAX
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\Z")
_NAME_NO_UNDERSCORE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_PROTOCOLS = (0, 1, 2)  # TCP, UDP, SCTP
_TEXT = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)  # KeyValue.value (env) is bytes
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _need(value: str, what: str) -> None:
    if not value:
        raise InvalidArgument(f"{what} is empty; it is required")


def _name(value: str, what: str, *, underscore: bool = True, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidArgument(f"{what} is empty; it is required")
        return
    pattern = _NAME if underscore else _NAME_NO_UNDERSCORE
    if len(value) > MAX_NAME or not pattern.match(value):
        allowed = "letters, digits, '-', '.' and '_'" if underscore else "letters, digits, '-' and '.'"
        raise InvalidArgument(f"{what} {value[:80]!r} is not a valid name: use {allowed}, starting and "
                              f"ending with a letter or digit, at most {MAX_NAME} characters")


def hostname(value: str, what: str = "config.hostname") -> None:
    """An RFC 1123 hostname of at most 64 characters; "" is fine (the pod's name or id is used)."""
    if not value:
        return
    if len(value) > MAX_HOSTNAME or not _HOSTNAME.match(value):
        raise InvalidArgument(f"{what} {value[:80]!r} is not a valid hostname: use dot-separated labels of "
                              f"letters, digits and '-' (each at most 63, {MAX_HOSTNAME} characters in all)")


def no_nul(msg: Message, prefix: str = "") -> None:
    """Refuse a NUL byte in any string (map keys and values, repeated and nested fields included).

    Raises:
        InvalidArgument: naming the field, as a dotted path (`config.labels["a"]`, `config.args[2]`).
    """
    for field, value in msg.ListFields():
        path = f"{prefix}{field.name}"
        if field.type in _TEXT:
            nul = "\0" if field.type == FieldDescriptor.TYPE_STRING else b"\0"
            items = enumerate(value) if field.is_repeated else ((None, value),)
            for index, text in items:
                if nul in text:
                    where = path if index is None else f"{path}[{index}]"
                    raise InvalidArgument(f"{where} contains a NUL byte; remove it")
        elif field.type == _MESSAGE and field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    where = f"{path}[{key[:40]!r}]" if isinstance(key, str) else f"{path}[{key}]"
                    if isinstance(key, str) and "\0" in key:
                        raise InvalidArgument(f"{path} has a key with a NUL byte ({key[:40]!r}); remove it")
                    if isinstance(item, str):
                        if "\0" in item:
                            raise InvalidArgument(f"{where} contains a NUL byte; remove it")
                    elif isinstance(item, Message):
                        no_nul(item, f"{where}.")
            elif field.is_repeated:
                for index, item in enumerate(value):
                    no_nul(item, f"{path}[{index}].")
            else:
                no_nul(value, f"{path}.")


def run_pod_sandbox(request: Any) -> None:
    if not request.HasField("config"):
        raise InvalidArgument("RunPodSandbox: config is missing")
    if not request.config.HasField("metadata"):
        raise InvalidArgument("RunPodSandbox: config.metadata is missing; the pod needs a name")
    no_nul(request)
    meta = request.config.metadata
    _name(meta.name, "config.metadata.name")
    _name(meta.namespace, "config.metadata.namespace", underscore=False, required=False)
    _name(meta.uid, "config.metadata.uid", underscore=False, required=False)
    hostname(request.config.hostname)
    _log_directory(request.config.log_directory)
    _name(request.runtime_handler, "runtime_handler", required=False)
    _port_mappings(request.config.port_mappings)


def _port_mappings(mappings: Any) -> None:
    for index, pm in enumerate(mappings):
        where = f"config.port_mappings[{index}]"
        if pm.protocol not in _PROTOCOLS:
            raise InvalidArgument(f"{where}.protocol {pm.protocol} is not TCP (0), UDP (1) or SCTP (2)")
        for field in ("container_port", "host_port"):
            if not 0 <= getattr(pm, field) <= 65535:
                raise InvalidArgument(f"{where}.{field} {getattr(pm, field)} is out of range 0-65535")
        if pm.host_ip:
            try:
                ipaddress.ip_address(pm.host_ip)
            except ValueError:
                raise InvalidArgument(f"{where}.host_ip {pm.host_ip[:80]!r} is not an IP address") from None


def _log_directory(value: str) -> None:
    if value and (not value.startswith("/") or ".." in value.split("/")):
        raise InvalidArgument(f"config.log_directory {value[:80]!r} must be an absolute path without '..' "
                              "(kubelet gives /var/log/pods/<namespace>_<name>_<uid>)")


def create_container(request: Any) -> None:
    _need(request.pod_sandbox_id, "pod_sandbox_id")
    if not request.HasField("config"):
        raise InvalidArgument("CreateContainer: config is missing")
    config = request.config
    if not config.HasField("metadata"):
        raise InvalidArgument("CreateContainer: config.metadata is missing; the container needs a name")
    no_nul(request)
    _name(config.metadata.name, "config.metadata.name")
    if not config.HasField("image") or not config.image.image:
        raise InvalidArgument(f"container {config.metadata.name!r}: config.image.image is empty; "
                              "name the image")
    if not request.HasField("sandbox_config"):
        raise InvalidArgument(f"container {config.metadata.name!r}: sandbox_config is missing; pass the "
                              "pod's PodSandboxConfig as given to RunPodSandbox")
    if ".." in config.log_path.split("/"):
        raise InvalidArgument(f"container {config.metadata.name!r}: config.log_path {config.log_path[:80]!r} "
                              "must stay inside the pod's log_directory (no '..'); kubelet gives "
                              "<container name>/<restart count>.log")


def container_id(value: str) -> None:
    _need(value, "container_id")


def sandbox_id(value: str) -> None:
    _need(value, "pod_sandbox_id")


def exec_sync(request: Any) -> None:
    _need(request.container_id, "container_id")
    if not request.cmd or not request.cmd[0]:
        raise InvalidArgument("ExecSync: cmd is empty; give the command to run")
    no_nul(request)
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
    no_nul(request)
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


__all__ = ["attach", "container_id", "create_container", "exec_", "exec_sync", "hostname", "no_nul",
           "port_forward", "run_pod_sandbox", "sandbox_id", "update_pod_resources"]
