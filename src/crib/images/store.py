"""Image records in the state database, with an in-memory index for fast lists and lookups.

Every record is one row (`images`: id -> the ImageRecord as JSON); the name index (tag or digest reference
-> id) is derived from the records, so it cannot drift from them. Changes go through one transaction that
also takes a moved tag away from the record that held it (that image stays, listed by id). Reads never
touch SQLite: ListImages with thousands of images is a walk over a dict.

Per-layer disk usage (for ImageFsInfo) is in `image_layers`, written when a layer is committed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from crib.state import Database, decode, encode
from crib.state.records import ImageRecord

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS image_layers (chain_id TEXT PRIMARY KEY, inodes INTEGER NOT NULL, "
    "disk_bytes INTEGER NOT NULL)",
)


class ImageStore:
    """Records by id and by name; see the module note."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate(SCHEMA)
        self._images: dict[str, ImageRecord] = {}
        self._names: dict[str, str] = {}
        for row in db.query("SELECT record FROM images"):
            rec = decode(ImageRecord, row["record"])
            self._images[rec.id] = rec
        self._reindex()
        self._usage: dict[str, tuple[int, int]] = {
            row["chain_id"]: (row["inodes"], row["disk_bytes"])
            for row in db.query("SELECT chain_id, inodes, disk_bytes FROM image_layers")}

    def _reindex(self) -> None:
        self._names = {}
        for rec in self._images.values():
            for name in (*rec.repo_tags, *rec.repo_digests):
                self._names[name] = rec.id

    # ------------------------------------------------------------------------------------------- reads

    def get(self, image_id: str) -> ImageRecord | None:
        return self._images.get(image_id)

    def by_name(self, name: str) -> ImageRecord | None:
        image_id = self._names.get(name)
        return self._images.get(image_id) if image_id else None

    def by_id_prefix(self, prefix: str) -> list[ImageRecord]:
        """Records whose id hex starts with prefix (for truncated ids as crictl prints them)."""
        prefix = prefix.removeprefix("sha256:")
        return [rec for image_id, rec in self._images.items() if image_id.split(":", 1)[1].startswith(prefix)]

    def all(self) -> list[ImageRecord]:
        return list(self._images.values())

    def __len__(self) -> int:
        return len(self._images)

    # ------------------------------------------------------------------------------------------ writes

    def save(self, record: ImageRecord) -> ImageRecord:
        """Store record, merged with an existing one of the same id; its names are taken from others.

        Returns:
            The record as stored (names merged).
        """
        old = self._images.get(record.id)
        if old is not None:
            record = dataclasses.replace(
                record,
                repo_tags=_union(old.repo_tags, record.repo_tags),
                repo_digests=_union(old.repo_digests, record.repo_digests),
            )
        claimed = set(record.repo_tags) | set(record.repo_digests)
        changed: dict[str, ImageRecord] = {}
        for name in claimed:
            holder = self._names.get(name)
            if holder is not None and holder != record.id:
                rec = changed.get(holder, self._images[holder])
                changed[holder] = dataclasses.replace(
                    rec, repo_tags=tuple(t for t in rec.repo_tags if t != name),
                    repo_digests=tuple(d for d in rec.repo_digests if d != name))
        changed[record.id] = record
        with self._db.transaction() as tx:
            for rec in changed.values():
                tx.execute("INSERT OR REPLACE INTO images (id, record) VALUES (?, ?)", (rec.id, encode(rec)))
        self._images.update(changed)
        self._reindex()
        return record

    def delete(self, image_id: str) -> ImageRecord | None:
        rec = self._images.get(image_id)
        if rec is None:
            return None
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM images WHERE id = ?", (image_id,))
        del self._images[image_id]
        self._reindex()
        return rec

    # --------------------------------------------------------------------------------------- layer usage

    def set_layer_usage(self, chain_id: str, inodes: int, disk_bytes: int) -> None:
        with self._db.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO image_layers (chain_id, inodes, disk_bytes) VALUES (?, ?, ?)",
                       (chain_id, inodes, disk_bytes))
        self._usage[chain_id] = (inodes, disk_bytes)

    def forget_layers(self, chain_ids: Iterable[str]) -> None:
        ids = [c for c in chain_ids if c in self._usage]
        if not ids:
            return
        with self._db.transaction() as tx:
            tx.executemany("DELETE FROM image_layers WHERE chain_id = ?", [(c,) for c in ids])
        for c in ids:
            del self._usage[c]

    def layer_usage(self) -> dict[str, tuple[int, int]]:
        """chain id -> (inodes, disk bytes) of every committed layer."""
        return dict(self._usage)


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))


__all__ = ["SCHEMA", "ImageStore"]
