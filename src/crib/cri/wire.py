"""Serialized CRI messages of immutable records, for the polled calls.

kubelet lists every pod and container every second and asks for the status of each that changed; building
a protobuf message per record per call, then serializing it, is most of what those calls cost at a few
hundred objects. crib's records are frozen and replaced on every change, so the serialized form of a record
is computed once and kept until the record object is replaced; a list response is then its items' bytes
framed as a repeated field, which is exactly what protobuf would have written (a message's fields may be
concatenated; a repeated message field is a sequence of tag, length, bytes). The servicer returns those
bytes and instrument() (cri/interceptors.py) passes bytes through the response serializer untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar


class _Record(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R")
I = TypeVar("I", bound=_Record)  # noqa: E741 - an item with an id

_LIMIT = 20000  # entries before a cache forgets everything (only reachable through filtered calls)


_ONE_BYTE = [bytes((v,)) for v in range(0x80)]


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint (the one- and two-byte cases, most tags, lengths and
    small values, without the loop)."""
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, data: bytes) -> bytes:
    """One length-delimited field (a message, string or bytes) with its tag."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def integer(number: int, value: int) -> bytes:
    """One varint field (int64 >= 0, enum, bool) with its tag; 0 is written out like any value."""
    return varint(number << 3) + varint(value)


def repeated(number: int, items: Iterable[bytes]) -> bytes:
    """A repeated message field of already serialized items."""
    tag = varint(number << 3 | 2)
    return b"".join([tag + varint(len(item)) + item for item in items])


class Cache(Generic[R]):
    """key -> (record, version, its serialized message); a hit needs the very same record object and an
    equal version (what else the message was built from, e.g. a file's identity; None when nothing)."""

    def __init__(self, build: Callable[[R], Any], *, limit: int = _LIMIT) -> None:
        self._build = build
        self._limit = limit
        self._items: dict[Hashable, tuple[R, Hashable, bytes]] = {}

    def get(self, key: Hashable, rec: R, version: Hashable = None) -> bytes:
        hit = self._items.get(key)
        if hit is not None and hit[0] is rec and hit[1] == version:
            return hit[2]
        data: bytes = self._build(rec).SerializeToString()
        if len(self._items) >= self._limit:
            self._items.clear()
        self._items[key] = (rec, version, data)
        return data

    def keep_only(self, keys: Iterable[Hashable]) -> None:
        """Forget the records not listed (called with a complete, unfiltered list)."""
        live = set(keys)
        if len(self._items) > len(live):
            for key in [k for k in self._items if k not in live]:
                del self._items[key]


def list_reply(cache: Cache[I], recs: Sequence[I], *, number: int = 1, complete: bool) -> bytes:
    """A list response whose repeated field `number` holds recs, each from cache; complete = recs are every
    record there is (an unfiltered list), which lets the cache forget removed ones."""
    out = repeated(number, [cache.get(r.id, r) for r in recs])
    if complete:
        cache.keep_only(r.id for r in recs)
    return out


__all__ = ["Cache", "field", "integer", "list_reply", "repeated", "varint"]
