"""Sandbox and container records: SQLite rows written through, served from memory.

Every change is one transaction (a row upsert or delete) and only then takes effect in memory, so what
list and status calls see never runs ahead of what a restarted daemon will read back. Names are UNIQUE
columns: a name is reserved by the same transaction that records the object as CREATING.

One exception, for a disk that is full: a delete that cannot be written still takes effect in memory, and
the row is deleted with the next write that succeeds (before it, in the same transaction). Kept in memory,
the record would hide as a half-undone object holding its name; left in the file, it is one that is
CREATING or REMOVING (deletes follow those phases), which a restarted daemon undoes or finishes anyway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterable, Iterator

from crib import log
from crib.errors import AlreadyExists, ResourceExhausted
from crib.state.codec import decode, encode
from crib.state.db import Database
from crib.state.records import ContainerRecord, SandboxRecord

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sandboxes (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS containers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "sandbox_id TEXT NOT NULL, data TEXT NOT NULL)",
)


_log = log.get(__name__)


class RuntimeStore:
    """The records of every pod and container this daemon knows (see the module note)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.migrate(_SCHEMA)
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}
        self._unwritten_deletes: set[tuple[str, str]] = set()  # (table, id); see the module note
        for row in db.query("SELECT data FROM sandboxes"):
            rec = decode(SandboxRecord, row["data"])
            self.sandboxes[rec.id] = rec
        for row in db.query("SELECT data FROM containers"):
            crec = decode(ContainerRecord, row["data"])
            self.containers[crec.id] = crec

    # ------------------------------------------------------------------------------------------ sandboxes

    def put_sandbox(self, rec: SandboxRecord) -> SandboxRecord:
        """Insert or replace; AlreadyExists if another sandbox holds the name.

        A pod's cgroups_created only grows while its record lives: another pod may hand it a parent cgroup
        (sandbox/parents.py) while this pod's own code still holds an older copy of the record, and that
        copy written back must not drop the hand-over (the parent would then belong to no one and stay).
        """
        old = self.sandboxes.get(rec.id)
        if old is not None and not set(old.cgroups_created) <= set(rec.cgroups_created):
            owned = sorted(set(old.cgroups_created) | set(rec.cgroups_created), key=lambda c: c.count("/"))
            rec = dataclasses.replace(rec, cgroups_created=tuple(owned))
        try:
            with self._transaction() as tx:
                tx.execute("INSERT INTO sandboxes (id, name, data) VALUES (?, ?, ?) ON CONFLICT(id) "
                           "DO UPDATE SET name = excluded.name, data = excluded.data",
                           (rec.id, rec.name, encode(rec)))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"pod sandbox name {rec.name!r} is taken by another sandbox") from exc
        self.sandboxes[rec.id] = rec
        return rec

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._delete("sandboxes", sandbox_id)
        self.sandboxes.pop(sandbox_id, None)

    def sandbox_by_name(self, name: str) -> SandboxRecord | None:
        return next((s for s in self.sandboxes.values() if s.name == name), None)

    # ----------------------------------------------------------------------------------------- containers

    def put_container(self, rec: ContainerRecord) -> ContainerRecord:
        """Insert or replace; AlreadyExists if another container holds the name."""
        try:
            with self._transaction() as tx:
                tx.execute("INSERT INTO containers (id, name, sandbox_id, data) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT(id) DO UPDATE SET name = excluded.name, data = excluded.data",
                           (rec.id, rec.name, rec.sandbox_id, encode(rec)))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"container name {rec.name!r} is taken by another container") from exc
        self.containers[rec.id] = rec
        return rec

    def put_containers(self, recs: Iterable[ContainerRecord]) -> None:
        """Several updates in one transaction (exits found on restart)."""
        recs = list(recs)
        with self._transaction() as tx:
            for rec in recs:
                tx.execute("UPDATE containers SET data = ? WHERE id = ?", (encode(rec), rec.id))
        for rec in recs:
            self.containers[rec.id] = rec

    def delete_container(self, container_id: str) -> None:
        self._delete("containers", container_id)
        self.containers.pop(container_id, None)

    def container_by_name(self, name: str) -> ContainerRecord | None:
        return next((c for c in self.containers.values() if c.name == name), None)

    def containers_of(self, sandbox_id: str) -> list[ContainerRecord]:
        return [c for c in self.containers.values() if c.sandbox_id == sandbox_id]

    # ------------------------------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction that first writes the deletes a full disk held back (see the module note)."""
        with self._db.transaction() as tx:
            pending = set(self._unwritten_deletes)
            for table, row_id in pending:
                tx.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
            yield tx
        self._unwritten_deletes -= pending

    def _delete(self, table: str, row_id: str) -> None:
        try:
            with self._transaction() as tx:
                tx.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
        except ResourceExhausted as exc:
            self._unwritten_deletes.add((table, row_id))
            log.event(_log, 30, "record removed, its row is deleted once the disk has room", table=table,
                      id=row_id, error=str(exc))

    def unwritten_deletes(self) -> int:
        """How many deletes wait for room on the disk (for tests and status)."""
        return len(self._unwritten_deletes)


__all__ = ["RuntimeStore"]
