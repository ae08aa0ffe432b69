"""Garbage collection: blobs and layer directories that no image record references and no pull leases.

Mark and sweep over what is on disk, so it also cleans what a crash left behind (a layer committed just
before the daemon died, before its image record was written). The referenced set is every record's
manifest, config and layer blobs and its layers' chain ids; in-flight pulls lease what they are building
(pipeline.Pipeline.lease). Runs after RemoveImage, after a failed pull (restricted to that pull's own
content), at start-up and on `crib image prune`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from crib import log
from crib.images.blobs import ContentStore
from crib.images.layers import LayerStore
from crib.images.store import ImageStore
from crib.images.unpack import remove_tree

_log = log.get(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class GcResult:
    blobs: int = 0
    layers: int = 0
    bytes_freed: int = 0


def referenced(store: ImageStore) -> set[str]:
    """Every digest and chain id some image record needs."""
    keep: set[str] = set()
    for rec in store.all():
        keep.add(rec.id)
        if rec.manifest_digest:
            keep.add(rec.manifest_digest)
        for layer in rec.layers:
            keep.update((layer.digest, layer.chain_id))
    return keep


def sweep(store: ImageStore, content: ContentStore, layers: LayerStore, leases: Collection[str],
          lock: threading.Lock, only: Iterable[str] | None = None) -> tuple[GcResult, list[str]]:
    """Remove what is unreferenced and unleased (blocking: run it in a thread).

    The mark and the unlink/rename happen under lock, which pulls also take to lease: a pull either
    leased an item before the mark (kept) or finds it gone and builds it again. Trees are deleted after.

    Args:
        leases: the live lease counter (read under lock).
        only: restrict to these digests / chain ids (a failed pull's leftovers); None = everything.

    Returns:
        The result, and the chain ids whose directories were removed.
    """
    candidates = set(only) if only is not None else None
    blobs = freed = 0
    usage = store.layer_usage()
    trash: list[tuple[str, Path]] = []
    with lock:
        keep = referenced(store) | set(leases)
        for digest in list(content.digests()):
            if digest in keep or (candidates is not None and digest not in candidates):
                continue
            freed += content.delete(digest)
            blobs += 1
        for chain_id in list(layers.chain_ids()):
            if chain_id in keep or (candidates is not None and chain_id not in candidates):
                continue
            detached = layers.detach(chain_id)
            if detached is not None:
                trash.append((chain_id, detached))
    for chain_id, path in trash:
        remove_tree(path)
        freed += usage.get(chain_id, (0, 0))[1]
    if blobs or trash:
        log.event(_log, 20, "garbage collected", blobs=blobs, layers=len(trash), bytes_freed=freed)
    return GcResult(blobs=blobs, layers=len(trash), bytes_freed=freed), [c for c, _ in trash]


class Collector:
    """Serializes sweeps; the service calls it with the pipeline's leases and lock."""

    def __init__(self, store: ImageStore, content: ContentStore, layers: LayerStore) -> None:
        self._store = store
        self._content = content
        self._layers = layers
        self._lock = asyncio.Lock()

    async def collect(self, leases: Collection[str], lock: threading.Lock,
                      only: Iterable[str] | None = None) -> GcResult:
        async with self._lock:
            frozen_only = None if only is None else frozenset(only)
            result, _gone = await asyncio.to_thread(
                sweep, self._store, self._content, self._layers, leases, lock, frozen_only)
            on_disk = set(self._layers.chain_ids())
            self._store.forget_layers([c for c in self._store.layer_usage() if c not in on_disk])
            return result


__all__ = ["Collector", "GcResult", "referenced", "sweep"]
