"""Pod and container records in SQLite, and cgroup counters read from a fake cgroupfs tree."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from crib.errors import AlreadyExists
from crib.network import PortMapping
from crib.state.db import Database
from crib.state.records import ContainerRecord, Phase, PodMeta, ResourcesRecord, SandboxRecord
from crib.state.store import RuntimeStore
from crib.system.cgroups import Cgroups


def _pod(sid: str, name: str) -> SandboxRecord:
    return SandboxRecord(id=sid, name=name, meta=PodMeta(name=name, uid="u", namespace="ns"),
                         port_mappings=(PortMapping(protocol="tcp", container_port=80, host_port=8080),),
                         cgroups_created=("/kubepods", "/kubepods/p"), labels={"a": "b"})


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


def test_v1_usage_is_read_from_the_controllers(tmp_path: Path) -> None:
    cg = _v1(tmp_path)
    for ctrl, files in {"cpuacct": {"cpuacct.usage": "123456789"},
                        "memory": {"memory.usage_in_bytes": "1000000", "memory.limit_in_bytes": "4000000",
                                   "memory.stat": "total_inactive_file 250000\ntotal_rss 600000\n"
                                                  "total_pgfault 42\ntotal_pgmajfault 2\n"},
                        "pids": {"pids.current": "3"}}.items():
        d = tmp_path / ctrl / "pod" / "c"
        d.mkdir(parents=True)
        for name, text in files.items():
            (d / name).write_text(text)
    u = cg.usage("/pod/c")
    assert (u.cpu_ns, u.memory_usage) == (123456789, 1000000)
    assert (u.memory_working_set, u.memory_rss) == (750000, 600000)
    assert (u.memory_available, u.page_faults, u.major_page_faults, u.pids) == (3250000, 42, 2, 3)


def test_v2_usage_converts_microseconds_and_reads_anon(tmp_path: Path) -> None:
    cg = Cgroups.__new__(Cgroups)
    cg.v2, cg.hierarchies = True, {"": tmp_path}
    d = tmp_path / "pod"
    d.mkdir()
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (d / "memory.current").write_text("2000\n")
    (d / "memory.max").write_text("max\n")
    (d / "memory.stat").write_text("anon 700\ninactive_file 500\npgfault 9\npgmajfault 1\n")
    u = cg.usage("/pod")
    assert (u.cpu_ns, u.memory_working_set, u.memory_rss, u.memory_available) == (1500000, 1500, 700, None)


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
