"""Frozen dataclasses to JSON and back, driven by their type hints.

One codec for every record, so no domain writes its own (de)serializer. Supported field types: str, int,
float, bool, None, Enum, nested dataclasses, tuple[X, ...], list[X], dict[str, X], and X | None.
Unknown keys in stored JSON are ignored and missing ones take the field's default, so a newer crib reads
an older database.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def encode(record: Any) -> str:
    """The record as compact JSON."""
    return json.dumps(_plain(record), separators=(",", ":"), sort_keys=True)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(args[0], value) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp):
        return from_plain(typing.cast(type, tp), value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_build(item, v) for v in value)
    if origin is list:
        item = typing.get_args(tp)[0]
        return [_build(item, v) for v in value]
    if origin is dict:
        _, vtype = typing.get_args(tp)
        return {k: _build(vtype, v) for k, v in value.items()}
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_plain(cls: type[T], data: dict[str, Any]) -> T:
    hints = _hints(typing.cast(Any, cls))
    kwargs = {f.name: _build(hints[f.name], data[f.name])
              for f in dataclasses.fields(typing.cast(Any, cls)) if f.name in data}
    return cls(**kwargs)


def decode(cls: type[T], text: str | bytes) -> T:
    """Rebuild a record of type cls from encode()'s output."""
    return from_plain(cls, json.loads(text))


__all__ = ["decode", "encode", "from_plain"]
