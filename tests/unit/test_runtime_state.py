"""Pod and container records in SQLite, and pod cgroups made in a fake cgroupfs tree."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from crib.errors import AlreadyExists, ResourceExhausted
from crib.network import PortMapping
from crib.state.db import Database
from crib.state.records import ContainerRecord, Phase, PodMeta, ResourcesRecord, SandboxRecord
from crib.state.store import RuntimeStore
from crib.system.cgroups import Cgroups


def _pod(sid: str, name: str) -> SandboxRecord:
    return SandboxRecord(id=sid, name=name, meta=PodMeta(name=name, uid="u", namespace="ns"),
                         port_mappings=(PortMapping(protocol="tcp", container_port=80, host_port=8080),),
                         cgroups_created=("/kubepods", "/kubepods/p"), labels={"a": "b"})


class FullDisk(Database):
    """A database whose disk fills up on demand (every transaction fails while `full`)."""

    full = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        if self.full:
            raise ResourceExhausted("the state database cannot be written: the disk is full")
        with super().transaction() as tx:
            yield tx


def test_a_delete_the_full_disk_refuses_is_kept_and_written_later(tmp_path: Path) -> None:
    """The record goes at once (it must not hide, holding its name); the row with the next write."""
    db = FullDisk(tmp_path / "state.db")
    store = RuntimeStore(db)
    store.put_sandbox(_pod("s1", "web_ns_u_0"))
    db.full = True
    store.delete_sandbox("s1")
    assert "s1" not in store.sandboxes
    assert store.unwritten_deletes() == 1
    with pytest.raises(ResourceExhausted):
        store.put_sandbox(_pod("s2", "web_ns_u_0"))
    db.full = False
    store.put_sandbox(_pod("s2", "web_ns_u_0"))  # the name is free: the held-back delete went first
    assert store.unwritten_deletes() == 0
    assert [r["id"] for r in db.query("SELECT id FROM sandboxes")] == ["s2"]


def test_records_survive_a_reopen_and_names_are_unique(tmp_path: Path) -> None:
    db = Database(tmp_path / "state.db")
    store = RuntimeStore(db)
    pod = store.put_sandbox(_pod("s1", "web_ns_u_0"))
    with pytest.raises(AlreadyExists, match="web_ns_u_0"):
        store.put_sandbox(_pod("s2", "web_ns_u_0"))
    container = ContainerRecord(id="c1", name="app_s1_0", sandbox_id="s1", meta_name="app",
                                resources=ResourcesRecord(memory_limit_in_bytes=1 << 20))
    store.put_container(container)
    store.put_sandbox(dataclasses.replace(pod, phase=Phase.CREATED, ips=("10.0.0.2",)))
    store.put_containers([dataclasses.replace(container, finished_at=5, exit_code=3)])
    db.close()

    again = RuntimeStore(Database(tmp_path / "state.db"))
    assert again.sandboxes["s1"].ips == ("10.0.0.2",)
    assert again.sandboxes["s1"].ready
    assert again.sandboxes["s1"].port_mappings[0].host_port == 8080
    assert again.containers["c1"].exited
    assert again.containers["c1"].exit_code == 3
    assert again.container_by_name("app_s1_0") is not None
    assert [c.id for c in again.containers_of("s1")] == ["c1"]
    again.delete_container("c1")
    again.delete_sandbox("s1")
    assert RuntimeStore(Database(tmp_path / "state.db")).sandboxes == {}


def _v1(tmp_path: Path) -> Cgroups:
    cg = Cgroups.__new__(Cgroups)
    cg.v2 = False
    cg._lock = threading.Lock()
    cg.hierarchies = {c: tmp_path / c for c in ("cpuacct", "memory", "pids", "cpu")}
    return cg


def test_ensure_creates_missing_levels_and_remove_created_undoes_exactly_that(tmp_path: Path) -> None:
    cg = _v1(tmp_path)
    for base in cg.dirs_roots:
        (base / "kubepods").mkdir(parents=True)
    created = cg.ensure("/kubepods/pod1/x")
    assert created == ["/kubepods/pod1", "/kubepods/pod1/x"]
    assert all((base / "kubepods/pod1/x").is_dir() for base in cg.dirs_roots)
    assert cg.remove_created(created) == []
    assert all((base / "kubepods").is_dir() for base in cg.dirs_roots)
    assert not any((base / "kubepods/pod1").exists() for base in cg.dirs_roots)


def test_an_existing_parent_with_an_empty_cpuset_is_filled_from_its_own_parent(tmp_path: Path) -> None:
    cg = _v1(tmp_path)
    cg.hierarchies["cpuset"] = tmp_path / "cpuset"
    for base in cg.dirs_roots:
        base.mkdir()
    (tmp_path / "cpuset" / "a").mkdir()
    for name, value in (("cpuset.cpus", "0-1\n"), ("cpuset.mems", "0\n")):
        (tmp_path / "cpuset" / name).write_text(value)
        (tmp_path / "cpuset" / "a" / name).write_text("\n")  # created by a racing ensure, not filled yet
    cg.ensure("/a")
    assert (tmp_path / "cpuset" / "a" / "cpuset.cpus").read_text() == "0-1\n"
    assert (tmp_path / "cpuset" / "a" / "cpuset.mems").read_text() == "0\n"


def test_a_parent_handed_to_a_pod_survives_its_own_older_copy_written_back(tmp_path: Path) -> None:
    """The soak lost /kubepods-like parents: a pod being created was handed one by a pod going away, then
    wrote its own (older) record back and dropped it; nobody removed the parent afterwards."""
    store = RuntimeStore(Database(tmp_path / "state.db"))
    mine = store.put_sandbox(dataclasses.replace(_pod("s1", "web_ns_u_0"), cgroups_created=("/k/p",)))
    store.put_sandbox(dataclasses.replace(store.sandboxes["s1"], cgroups_created=("/k", "/k/p")))  # handed
    written = store.put_sandbox(dataclasses.replace(mine, phase=Phase.CREATED))  # the creator's copy
    assert written.cgroups_created == ("/k", "/k/p")
    assert RuntimeStore(Database(tmp_path / "state.db")).sandboxes["s1"].cgroups_created == ("/k", "/k/p")
