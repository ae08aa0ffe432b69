"""The state database: one SQLite file under root, in WAL mode.

Why SQLite: a transaction is atomic across tables (a container row and its name reservation change
together), a crash mid-write leaves the previous state intact, and reads are fast enough to answer list
calls for thousands of objects without keeping a second copy in memory. synchronous=NORMAL in WAL mode
survives a daemon crash (SIGKILL) without losing committed transactions; only a power loss may roll back
the newest ones, never corrupt the file.

Each domain owns its tables and declares them with `migrate()`; records go in and out as JSON through
state.codec, so what is stored is crib's own dataclasses, never protobuf.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from crib.errors import ResourceExhausted

SQLITE_FULL = 13  # "database or disk is full" (extended codes keep it in the low byte)


class Database:
    """A SQLite connection shared by the daemon's event loop and its worker threads (serialized)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=10000"):
            self._conn.execute(f"PRAGMA {pragma}")

    def migrate(self, statements: Sequence[str]) -> None:
        """Apply idempotent DDL (CREATE TABLE/INDEX IF NOT EXISTS ...) in one transaction."""
        with self.transaction() as tx:
            for stmt in statements:
                tx.execute(stmt)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back if the block raises.

        Raises:
            ResourceExhausted: the disk under root is full (nothing was written; retry once it has room).
        """
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # SQLite may have rolled back already (a failed COMMIT)
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_FULL:
                    raise ResourceExhausted(f"the state database {self.path} cannot be written: the disk is "
                                            "full; free space under crib's root and retry") from exc
                raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def close(self) -> None:
        with self._lock:
            self._conn.close()


__all__ = ["Database"]
