"""Cached serialized replies (cri/wire.py) are byte for byte what protobuf builds, and follow the records."""

from __future__ import annotations

import dataclasses

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
