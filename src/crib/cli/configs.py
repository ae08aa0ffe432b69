"""Pod and container config files (JSON or YAML) into CRI messages, as crictl reads them.

The files are the protobuf JSON mapping; the crictl walkthroughs write field names in snake_case
(`log_directory`, `port_mappings`), and lowerCamel works too. Enums take their number (crictl's form) or
their name. Two things differ from plain protobuf JSON, both to read crictl's files unchanged:
`KeyValue.value` (envs) is bytes in crib's proto but a plain string in these files, so any string given for
a bytes field is taken as its UTF-8 text; and an unknown field is an error that names the field, where it
sits and the file (crictl's Go decoder drops it silently, which hides typos such as `port_mapping`).
"""

from __future__ import annotations

import base64
import difflib
import json
import uuid
from pathlib import Path
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli.errors import CliError


class ConfigFileError(CliError):
    """A config file that cannot be used; the message names the file and what to change."""


def _read(path: str) -> Any:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigFileError(f"config at {path} not found") from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}") from exc
    if p.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            if p.suffix == ".json":
                raise ConfigFileError(f"{path}: not valid JSON: {exc}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML or JSON: {exc}") from None


def _field_names(descriptor: Any) -> dict[str, Any]:
    names: dict[str, Any] = {}
    for field in descriptor.fields:
        names[field.name] = field
        names[field.json_name] = field
    return names


def _is_map(field: Any) -> bool:
    msg = field.message_type
    return bool(msg is not None and msg.GetOptions().map_entry)


def _normalize(doc: Any, descriptor: Any, where: str, path: str) -> Any:
    """Check field names against the message (recursively) and turn bytes-as-text into base64."""
    if not isinstance(doc, dict):
        raise ConfigFileError(f"{path}: {where or 'the file'} must be an object with the fields of "
                              f"{descriptor.name}, not {type(doc).__name__}")
    known = _field_names(descriptor)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        field = known.get(key)
        here = f"{where}.{key}" if where else str(key)
        if field is None:
            hint = difflib.get_close_matches(str(key), [f.name for f in descriptor.fields], n=1)
            guess = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigFileError(f"{path}: unknown field {here!r} ({descriptor.name} has no field "
                                  f"{key!r}){guess}")
        out[key] = _value(value, field, here, path)
    return out


def _value(value: Any, field: Any, where: str, path: str) -> Any:
    if value is None:
        return value
    if _is_map(field):
        if not isinstance(value, dict):
            raise ConfigFileError(f"{path}: {where} must be a map of key: value")
        vfield = field.message_type.fields_by_name["value"]
        return {k: _value(v, vfield, f"{where}[{k}]", path) for k, v in value.items()}
    if field.is_repeated:
        if not isinstance(value, list):
            raise ConfigFileError(f"{path}: {where} must be a list")
        return [_single(v, field, f"{where}[{i}]", path) for i, v in enumerate(value)]
    return _single(value, field, where, path)


def _single(value: Any, field: Any, where: str, path: str) -> Any:
    if field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf."):
        return _normalize(value, field.message_type, where, path)
    if field.type == field.TYPE_BYTES and isinstance(value, str):
        return base64.b64encode(value.encode()).decode()
    return value


def parse(doc: Any, message: Any, path: str) -> Any:
    """Fill message from a decoded document.

    Raises:
        ConfigFileError: unknown fields, wrong shapes or values, naming the file.
    """
    from google.protobuf import json_format

    normalized = _normalize(doc, message.DESCRIPTOR, "", path)
    try:
        json_format.ParseDict(normalized, message)
    except json_format.ParseError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    return message


def load_pod_config(path: str) -> api.PodSandboxConfig:
    """A PodSandboxConfig; a missing metadata.uid is made up (as crictl does).

    Raises:
        ConfigFileError: unreadable, unknown fields, or no metadata name/namespace.
    """
    config = parse(_read(path), api.PodSandboxConfig(), path)
    if not config.HasField("metadata"):
        raise ConfigFileError(f"{path}: metadata is not set; a pod needs metadata.name and "
                              "metadata.namespace")
    if not config.metadata.name or not config.metadata.namespace:
        raise ConfigFileError(f"{path}: metadata.name and metadata.namespace must both be set")
    if not config.metadata.uid:
        config.metadata.uid = str(uuid.uuid4())
    return config  # type: ignore[no-any-return]


def load_container_config(path: str) -> api.ContainerConfig:
    """A ContainerConfig with a name and an image.

    Raises:
        ConfigFileError: unreadable, unknown fields, or no metadata.name / image.image.
    """
    config = parse(_read(path), api.ContainerConfig(), path)
    if not config.metadata.name:
        raise ConfigFileError(f"{path}: metadata.name is not set; a container needs a name")
    if not config.image.image:
        raise ConfigFileError(f"{path}: image.image is not set; a container needs an image")
    if not config.image.user_specified_image:
        config.image.user_specified_image = config.image.image
    return config  # type: ignore[no-any-return]


__all__ = ["ConfigFileError", "load_container_config", "load_pod_config", "parse"]
