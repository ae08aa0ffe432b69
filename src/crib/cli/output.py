"""Turning CRI messages into what a person or a script reads."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def message_dict(msg: Message) -> dict[str, Any]:
    """protojson with default values, in camelCase: the shape crictl prints."""
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def info_value(text: str) -> Any:
    """A Status info value: JSON when it parses (it should), else the raw string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


__all__ = ["dumps", "info_value", "message_dict"]
