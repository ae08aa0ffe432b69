"""Chunks of a Stream* list call: each message well under the gRPC size limit, at least one item each.

The Stream* RPCs exist so that a node with more objects than one message can hold still lists them. A
message takes items until adding the next would pass CHUNK_BYTES or CHUNK_ITEMS (an item bigger than
CHUNK_BYTES goes alone); no item repeats, and an empty list sends no message at all, only the end of the
stream. kubelet's receive limit is 16 MiB; 1 MiB chunks leave room and keep each write short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

CHUNK_BYTES = 1024 * 1024
CHUNK_ITEMS = 1000
_FIELD_OVERHEAD = 6  # tag and length prefix of a repeated message field, generously

M = TypeVar("M")


def _byte_size(item: Any) -> int:
    return int(item.ByteSize())


def chunked(items: Iterable[M], *, max_bytes: int = CHUNK_BYTES, max_items: int = CHUNK_ITEMS,
            size: Callable[[M], int] = _byte_size) -> Iterator[list[M]]:
    """Consecutive, non-empty batches of items, in order; size is an item's serialized length (messages
    by default; pass len for items already serialized)."""
    batch: list[M] = []
    total = 0
    for item in items:
        n = size(item) + _FIELD_OVERHEAD
        if batch and (total + n > max_bytes or len(batch) >= max_items):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch


__all__ = ["CHUNK_BYTES", "CHUNK_ITEMS", "chunked"]
