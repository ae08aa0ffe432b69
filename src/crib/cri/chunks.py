"""Chunks of a Stream* list call: each message well under the gRPC size limit, at least one item each.

The Stream* RPCs exist so that a node with more objects than one message can hold still lists them. A
message takes items until adding the next would pass CHUNK_BYTES or CHUNK_ITEMS (an item bigger than
CHUNK_BYTES goes alone); no item repeats, and an empty list sends no message at all, only the end of the
stream. kubelet's receive limit is 16 MiB; 1 MiB chunks leave room and keep each write short.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from google.protobuf.message import Message

CHUNK_BYTES = 1024 * 1024
CHUNK_ITEMS = 1000
_FIELD_OVERHEAD = 6  # tag and length prefix of a repeated message field, generously

M = TypeVar("M", bound=Message)


def chunked(items: Iterable[M], *, max_bytes: int = CHUNK_BYTES,
            max_items: int = CHUNK_ITEMS) -> Iterator[list[M]]:
    """Consecutive, non-empty batches of items, in order."""
    batch: list[M] = []
    size = 0
    for item in items:
        n = item.ByteSize() + _FIELD_OVERHEAD
        if batch and (size + n > max_bytes or len(batch) >= max_items):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += n
    if batch:
        yield batch


__all__ = ["CHUNK_BYTES", "CHUNK_ITEMS", "chunked"]
