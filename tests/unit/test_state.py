"""The state database and the record codec."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crib.errors import ResourceExhausted
from crib.state import Database, decode, encode


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, slots=True, kw_only=True)
class Inner:
    n: int
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Outer:
    name: str
    color: Color
    inner: Inner
    maybe: Inner | None = None
    labels: dict[str, str] = field(default_factory=dict)
    items: list[Inner] = field(default_factory=list)
    ratio: float = 0.0


def test_codec_round_trip() -> None:
    rec = Outer(name="x", color=Color.BLUE, inner=Inner(n=1, tags=("a", "b")), maybe=None,
                labels={"k": "v"}, items=[Inner(n=2)], ratio=3.0)
    assert decode(Outer, encode(rec)) == rec


def test_codec_tolerates_old_and_new_fields() -> None:
    text = '{"name":"x","color":"red","inner":{"n":1,"gone":true},"future":1,"ratio":2}'
    rec = decode(Outer, text)
    assert rec == Outer(name="x", color=Color.RED, inner=Inner(n=1), ratio=2.0)
    assert isinstance(rec.ratio, float)


def test_transaction_commits_or_rolls_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.db")
    db.migrate(["CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, doc TEXT NOT NULL)"])
    db.migrate(["CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, doc TEXT NOT NULL)"])  # idempotent
    with db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("a", "1"))

    def failing_insert() -> None:
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (?, ?)", ("b", "2"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_insert()
    assert [r["id"] for r in db.query("SELECT id FROM t")] == ["a"]
    db.close()
    again = Database(tmp_path / "state.db")
    assert again.query_one("SELECT doc FROM t WHERE id = ?", ("a",))["doc"] == "1"
    assert again.query_one("PRAGMA journal_mode")[0] == "wal"
    again.close()


def test_a_full_disk_is_resource_exhausted_and_loses_nothing(tmp_path: Path) -> None:
    """SQLITE_FULL (a full filesystem under root; here a page limit) is RESOURCE_EXHAUSTED, not a raw
    sqlite3 error (which answered INTERNAL), and what was committed before stays readable."""
    db = Database(tmp_path / "state.db")
    db.migrate(["CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, doc TEXT NOT NULL)"])
    with db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("kept", "1"))
    pages = db.query_one("PRAGMA page_count")[0]
    db.query(f"PRAGMA max_page_count = {pages + 2}")

    def fill() -> None:
        for i in range(1000):
            with db.transaction() as tx:
                tx.execute("INSERT INTO t VALUES (?, ?)", (f"x{i}", "y" * 4000))

    with pytest.raises(ResourceExhausted, match="cannot be written: the disk is full"):
        fill()
    assert db.query_one("SELECT doc FROM t WHERE id = 'kept'")["doc"] == "1"
    db.query(f"PRAGMA max_page_count = {2**30}")
    with db.transaction() as tx:  # room again: writes work, no transaction was left open
        tx.execute("INSERT INTO t VALUES (?, ?)", ("after", "2"))
    assert db.query_one("PRAGMA integrity_check")[0] == "ok"
    db.close()
