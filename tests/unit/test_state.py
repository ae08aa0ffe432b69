"""The state database and the record codec."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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
