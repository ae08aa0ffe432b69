"""Cached serialized replies (cri/wire.py) are byte for byte what protobuf builds, and follow the records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cri import container_convert, sandbox_convert, wire
from crib.cri.image_servicer import to_image
from crib.state.records import ContainerRecord, ImageRecord, Phase, PodMeta, SandboxRecord


def _pod(sid: str, **kw: object) -> SandboxRecord:
    meta = PodMeta(name=f"p{sid}", uid="u", namespace="ns")
    return SandboxRecord(id=sid, name=f"p{sid}_ns_u_0", meta=meta, phase=Phase.CREATED,
                         created_at=1700000000000000000 + len(sid), labels={"app": "web"},
                         annotations={"a": "b" * 300}, ips=("10.0.0.2", "fd00::2"), **kw)  # type: ignore[arg-type]


def _container(cid: str, **kw: object) -> ContainerRecord:
    return ContainerRecord(id=cid, name=f"c{cid}", sandbox_id="s1", meta_name=f"c{cid}", image="busybox",
                           labels={"k": "v"}, started_at=5, **kw)  # type: ignore[arg-type]


def test_list_and_status_replies_parse_back_equal() -> None:
    pods = [_pod(f"s{i}") for i in range(3)]
    containers = [_container(f"c{i}", finished_at=9 if i == 1 else 0, exit_code=i) for i in range(3)]
    assert api.ListPodSandboxResponse.FromString(sandbox_convert.list_response(pods, complete=True)) == \
        api.ListPodSandboxResponse(items=[sandbox_convert.pod(p) for p in pods])
    assert api.ListContainersResponse.FromString(container_convert.list_response(containers, complete=True)) \
        == api.ListContainersResponse(containers=[container_convert.container(c) for c in containers])
    assert api.PodSandboxStatusResponse.FromString(sandbox_convert.status_response(pods[0], 0)) == \
        api.PodSandboxStatusResponse(status=sandbox_convert.status(pods[0]))
    stamped = api.PodSandboxStatusResponse.FromString(sandbox_convert.status_response(pods[0], 12345))
    assert stamped.timestamp == 12345
    assert api.ContainerStatusResponse.FromString(container_convert.status_response(containers[1])) == \
        api.ContainerStatusResponse(status=container_convert.status(containers[1]))
    assert api.ListPodSandboxResponse.FromString(sandbox_convert.list_response([], complete=True)).items == []


def test_a_replaced_record_is_served_anew() -> None:
    rec = _container("x")
    first = api.ContainerStatusResponse.FromString(container_convert.status_response(rec))
    assert first.status.state == api.CONTAINER_RUNNING
    exited = dataclasses.replace(rec, finished_at=10, exit_code=137)
    again = api.ContainerStatusResponse.FromString(container_convert.status_response(exited))
    assert again.status.state == api.CONTAINER_EXITED
    assert again.status.exit_code == 137


def test_image_bytes_equal_the_message() -> None:
    rec = ImageRecord(id="sha256:" + "a" * 64, repo_tags=("busybox:latest",), repo_digests=(), size=123)
    cache: wire.Cache[ImageRecord] = wire.Cache(lambda r: to_image(r, pinned=True))
    assert api.ImageStatusResponse.FromString(wire.field(1, cache.get(rec.id, rec))) == \
        api.ImageStatusResponse(image=to_image(rec, pinned=True))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**35, 2**63 - 1], ids=str)
def test_varint_fields_match_protobuf(value: int) -> None:
    assert api.PodSandboxStatusResponse.FromString(wire.integer(4, value)).timestamp == value
    assert api.PodSandboxStatusResponse(timestamp=value).SerializeToString() in (wire.integer(4, value), b"")


def test_keep_only_forgets_removed_records() -> None:
    built: list[str] = []

    def build(rec: ContainerRecord) -> api.Container:
        built.append(rec.id)
        return container_convert.container(rec)

    cache: wire.Cache[ContainerRecord] = wire.Cache(build)
    a, b = _container("a"), _container("b")
    cache.get("a", a)
    cache.get("b", b)
    cache.keep_only(["b"])
    cache.get("b", b)
    cache.get("a", a)
    assert built == ["a", "b", "a"]


def test_a_changed_version_is_built_anew_and_the_limit_bounds_the_cache() -> None:
    built: list[tuple[str, int]] = []
    version = {"a": 1}

    def build(rec: ContainerRecord) -> api.Container:
        built.append((rec.id, version["a"]))
        return container_convert.container(rec)

    cache: wire.Cache[ContainerRecord] = wire.Cache(build, limit=2)
    a, b, c = _container("a"), _container("b"), _container("c")
    cache.get("a", a, 1)
    cache.get("a", a, 1)
    version["a"] = 2
    cache.get("a", a, 2)
    cache.get("b", b)
    cache.get("c", c)  # over the limit: everything is forgotten, then c kept
    cache.get("a", a, 2)
    assert built == [("a", 1), ("a", 2), ("b", 2), ("c", 2), ("a", 2)]


def test_verbose_status_follows_the_record_and_its_config_json(tmp_path: Path) -> None:
    def bundle(cid: str) -> Path:
        return tmp_path / cid

    (tmp_path / "v").mkdir()
    config = tmp_path / "v" / "config.json"
    config.write_text(json.dumps({"ociVersion": "1.0.2", "linux": {"resources": {"cpu": {"shares": 512}}}}))
    statuses = container_convert.VerboseStatuses(bundle)
    rec = _container("v", pid=42)

    def spec(data: bytes) -> dict[str, object]:
        reply = api.ContainerStatusResponse.FromString(data)
        assert reply.status == container_convert.status(rec_now)
        info: dict[str, object] = json.loads(reply.info["info"])
        assert info["pid"] == rec_now.pid
        return info.get("runtimeSpec", {})  # type: ignore[return-value]

    rec_now = rec
    first = statuses.reply(rec)
    assert statuses.reply(rec) is first  # nothing changed: the same bytes
    assert spec(first)["linux"] == {"resources": {"cpu": {"shares": 512}}}
    replacement = tmp_path / "v" / "config.json.tmp"  # replaced whole, as system/atomic.py does
    replacement.write_text(json.dumps({"ociVersion": "1.0.2",
                                       "linux": {"resources": {"cpu": {"shares": 256}}}}))
    replacement.rename(config)
    assert spec(statuses.reply(rec))["linux"] == {"resources": {"cpu": {"shares": 256}}}
    rec_now = dataclasses.replace(rec, pid=43)
    assert spec(statuses.reply(rec_now))["linux"] == {"resources": {"cpu": {"shares": 256}}}
    config.write_text('{"ociVersion": "1.0.2", "linux": ')  # not one object: left out, the info still JSON
    assert spec(statuses.reply(rec_now)) == {}
    config.unlink()
    assert spec(statuses.reply(rec_now)) == {}  # a bundle without config.json: the rest of the info
