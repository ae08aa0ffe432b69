"""The attachment cache: libcni-compatible files, atomic writes, lookups by container."""

from __future__ import annotations

import base64
import errno
import json
import os
from pathlib import Path

import pytest

from crib.network.cache import Attachment, ResultCache


def att(cid: str = "c" * 64, net: str = "my-net", **over: object) -> Attachment:
    base: dict[str, object] = {"container_id": cid, "network_name": net, "ifname": "eth0",
                               "netns": "/run/crib/netns/x", "config": b'{"name":"my-net"}',
                               "cni_version": "1.0.0",
                               "cni_args": (("IgnoreUnknown", "1"),), "capability_args": {"portMappings": []}}
    base.update(over)
    return Attachment(**base)  # type: ignore[arg-type]


def test_roundtrip_and_libcni_layout(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "results")
    entry = att(result={"cniVersion": "1.0.0", "ips": []}, complete=True)
    cache.write(entry)
    path = tmp_path / "results" / f"my-net-{'c' * 64}-eth0"
    doc = json.loads(path.read_bytes())
    assert doc["kind"] == "cniCacheV1"
    assert doc["containerId"] == "c" * 64
    assert doc["networkName"] == "my-net"
    assert doc["ifName"] == "eth0"
    assert base64.b64decode(doc["config"]) == b'{"name":"my-net"}'
    assert doc["cniArgs"] == [["IgnoreUnknown", "1"]]
    assert doc["result"] == {"cniVersion": "1.0.0", "ips": []}
    assert cache.read("my-net", "c" * 64, "eth0") == entry
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [path.name]  # no temp file left


def test_intent_without_result(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.write(att())
    got = cache.read("my-net", "c" * 64, "eth0")
    assert got is not None
    assert got.result is None
    assert not got.complete


def test_a_libcni_entry_with_a_result_counts_as_complete(tmp_path: Path) -> None:
    doc = {"kind": "cniCacheV1", "containerId": "abc", "config": base64.b64encode(b"{}").decode(),
           "ifName": "eth0", "networkName": "n", "result": {"cniVersion": "1.0.0"}}
    (tmp_path / "n-abc-eth0").write_text(json.dumps(doc))
    got = ResultCache(tmp_path).read("n", "abc", "eth0")
    assert got is not None
    assert got.complete
    assert got.cni_version == ""


def test_for_container_finds_every_network_and_nothing_else(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.write(att(net="a"))
    cache.write(att(net="b-with-dashes"))
    cache.write(att(cid="d" * 64, net="a"))
    found = cache.for_container("c" * 64)
    assert sorted(a.network_name for a in found) == ["a", "b-with-dashes"]
    assert len(cache.all()) == 3
    cache.remove(found[0])
    cache.remove(found[0])  # idempotent
    assert len(cache.all()) == 2


def test_corrupt_entries_are_reported_not_used(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.write(att())
    (tmp_path / f"x-{'c' * 64}-eth0").write_text("{garbage")
    (tmp_path / "y-e-eth0").write_text(json.dumps({"kind": "other"}))
    assert [a.network_name for a in cache.for_container("c" * 64)] == ["my-net"]
    assert sorted(Path(p).name for p in cache.corrupt()) == [f"x-{'c' * 64}-eth0", "y-e-eth0"]


def test_missing_directory_is_empty(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "nope")
    assert cache.all() == []
    assert cache.read("n", "c", "eth0") is None
    assert cache.corrupt() == []


def test_a_write_the_disk_refuses_leaves_the_old_entry_and_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ResultCache(tmp_path)
    first = att()
    cache.write(first)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        cache.write(att(result={"cniVersion": "1.0.0"}, complete=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.key]
    assert cache.read("my-net", "c" * 64, "eth0") == first


def test_temp_files_a_killed_daemon_left_are_dropped_but_for_the_pods_kept(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    mine, other = att(), att(cid="d" * 64)
    cache.write(mine)
    cache.write(other)
    for entry in (mine, other):
        (tmp_path / f".{entry.key}.tmp").write_bytes(b'{"kind":')
    assert cache.drop_temps(lambda owner: owner != mine.container_id) == [f".{mine.key}.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".{other.key}.tmp", mine.key, other.key])
    assert cache.drop_temps() == [f".{other.key}.tmp"]
    assert cache.all() == [mine, other]
