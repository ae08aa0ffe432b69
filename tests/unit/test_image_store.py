"""Image records: merge on re-pull, moving tags, persistence, lookups; and chain ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

from crib.images.layers import chain_ids
from crib.images.store import ImageStore
from crib.state import Database, encode
from crib.state.records import ImageConfig, ImageRecord, LayerRef


def rid(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def rec(n: int, tags: tuple[str, ...] = (), digests: tuple[str, ...] = ()) -> ImageRecord:
    return ImageRecord(id=rid(n), repo_tags=tags, repo_digests=digests, size=n,
                       config=ImageConfig(user=str(n)),
                       layers=(LayerRef(digest=rid(100 + n), diff_id=rid(200 + n), chain_id=rid(200 + n),
                                        size=1,
                                        media_type="application/vnd.oci.image.layer.v1.tar+gzip"),))


def test_save_merges_names_and_moves_tags(tmp_path: Path) -> None:
    store = ImageStore(Database(tmp_path / "state.db"))
    store.save(rec(1, ("r/a:1",), ("r/a@" + rid(11),)))
    merged = store.save(rec(1, ("r/a:2",), ("r/a@" + rid(12),)))
    assert merged.repo_tags == ("r/a:1", "r/a:2")
    assert merged.repo_digests == ("r/a@" + rid(11), "r/a@" + rid(12))
    # r/a:2 moves to image 2; image 1 keeps its other tag and stays listed.
    store.save(rec(2, ("r/a:2",)))
    assert store.by_name("r/a:2").id == rid(2)  # type: ignore[union-attr]
    assert store.get(rid(1)).repo_tags == ("r/a:1",)  # type: ignore[union-attr]
    # Moving the last tag leaves an untagged image, still there by id.
    store.save(rec(3, ("r/a:1",)))
    assert store.get(rid(1)).repo_tags == ()  # type: ignore[union-attr]
    assert len(store) == 3
    reopened = ImageStore(Database(tmp_path / "state.db"))
    assert {r.id: r for r in reopened.all()} == {r.id: r for r in store.all()}


def test_delete_and_lookups(tmp_path: Path) -> None:
    store = ImageStore(Database(tmp_path / "state.db"))
    store.save(rec(1, ("r/a:1",)))
    store.save(rec(2, ("r/b:1",)))
    assert [r.id for r in store.by_id_prefix(rid(1)[7:19])] == [rid(1)]
    assert len(store.by_id_prefix("")) == 2
    assert store.delete(rid(1)) is not None
    assert store.delete(rid(1)) is None
    assert store.by_name("r/a:1") is None
    assert [r.id for r in ImageStore(Database(tmp_path / "state.db")).all()] == [rid(2)]


def test_layer_usage_persists(tmp_path: Path) -> None:
    store = ImageStore(Database(tmp_path / "state.db"))
    store.set_layer_usage(rid(5), 10, 4096)
    store.set_layer_usage(rid(6), 1, 8192)
    store.forget_layers([rid(5), rid(7)])
    assert ImageStore(Database(tmp_path / "state.db")).layer_usage() == {rid(6): (1, 8192)}


def test_a_thousand_images_are_listed_from_memory(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.db")
    ImageStore(db)  # creates the tables
    with db.transaction() as tx:
        for n in range(1000):
            r = rec(n, (f"r/img{n}:latest",))
            tx.execute("INSERT INTO images (id, record) VALUES (?, ?)", (r.id, encode(r)))
    store = ImageStore(db)
    db.close()  # reads must not need SQLite any more: list and lookups are dict walks
    assert len(store.all()) == 1000
    assert store.by_name("r/img999:latest").size == 999  # type: ignore[union-attr]
    assert len(store.by_id_prefix(rid(5)[7:20])) == 1


def test_chain_ids_follow_the_oci_definition() -> None:
    a, b, c = rid(1), rid(2), rid(3)
    chain = chain_ids([a, b, c])
    assert chain[0] == a
    assert chain[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain[2] == "sha256:" + hashlib.sha256(f"{chain[1]} {c}".encode()).hexdigest()
    assert chain_ids([]) == []
