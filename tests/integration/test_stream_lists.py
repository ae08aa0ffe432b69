"""The Stream* list RPCs against their List calls, for 0, 1 and 3000 objects.

Each stream must give what the List call gives (same filter, same order), in messages of at least one item,
no item twice, and end. 3000 objects are records written straight into the state database before the
daemon starts (stopped pods, exited containers, images with no layers): listing does not need them to run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from crib._proto.runtime.v1 import api_pb2 as api
from crib.state import Database, encode
from crib.state.records import ContainerRecord, ImageRecord, Phase, PodMeta, SandboxRecord
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, container_config, pod_config, pull
from tests.fixtures.daemon import CribDaemon

MANY = 3000


def _seed(root: Path, count: int) -> None:
    """count stopped pods, each with one exited container, and count images, in one transaction each."""
    root.mkdir(parents=True, mode=0o700)
    db = Database(root / "state.db")
    db.migrate(
        (
            "CREATE TABLE IF NOT EXISTS sandboxes (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
            "data TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS containers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
            "sandbox_id TEXT NOT NULL, data TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS images (id TEXT PRIMARY KEY, record TEXT NOT NULL)",
        )
    )
    now = time.time_ns()
    with db.transaction() as tx:
        for i in range(count):
            sid, cid = f"{i:08d}".ljust(64, "a"), f"{i:08d}".ljust(64, "c")
            name = f"pod{i}_ns_uid{i}_0"
            labels = {"group": str(i % 3), "app": f"app{i}"}
            pod = SandboxRecord(
                id=sid,
                name=name,
                meta=PodMeta(name=f"pod{i}", uid=f"uid{i}", namespace="ns"),
                phase=Phase.CREATED,
                created_at=now + i,
                stopped_at=now + i,
                labels=labels,
                annotations={"note": "x" * 100},
            )
            ctr = ContainerRecord(
                id=cid,
                name=f"c{i}_{sid}_0",
                sandbox_id=sid,
                meta_name=f"c{i}",
                phase=Phase.CREATED,
                created_at=now + i,
                started_at=now + i,
                finished_at=now + i + 1,
                labels=labels,
                image="busybox",
                image_id="sha256:" + "b" * 64,
            )
            tx.execute("INSERT INTO sandboxes (id, name, data) VALUES (?, ?, ?)", (sid, name, encode(pod)))
            tx.execute(
                "INSERT INTO containers (id, name, sandbox_id, data) VALUES (?, ?, ?, ?)",
                (cid, ctr.name, sid, encode(ctr)),
            )
            image = ImageRecord(id=f"sha256:{i:064d}", repo_tags=(f"example.test/many/img{i}:v1",), size=i)
            tx.execute("INSERT INTO images (id, record) VALUES (?, ?)", (image.id, encode(image)))
    db.close()


def _ids(items: Iterable[Any]) -> list[str]:
    out = []
    for item in items:
        ident = item.attributes.id if hasattr(item, "attributes") else item.id
        out.append(ident)
    return out


def _same_stream(listed: list[Message], messages: list[Any], field: str) -> list[list[Message]]:
    """The stream's batches after checking them against the List answer; see the module note."""
    batches = [list(getattr(m, field)) for m in messages]
    assert all(batches), "a streamed message carries no item"
    streamed = [item for batch in batches for item in batch]
    assert len(set(_ids(streamed))) == len(streamed), "an item was streamed twice"
    assert _ids(streamed) == _ids(listed)
    return batches


def _strip_timestamps(msg: Message) -> Message:
    """A copy without the reading times (List and Stream read at different moments)."""
    out = type(msg)()
    out.CopyFrom(msg)

    def walk(m: Message) -> None:
        for fd, value in m.ListFields():
            if fd.name == "timestamp":
                m.ClearField(fd.name)
            elif fd.message_type is not None and not fd.message_type.GetOptions().map_entry:
                for sub in value if fd.is_repeated else [value]:
                    walk(sub)

    walk(out)
    return out


# (name, List method, its request, the List answer's field, Stream method, its request, the stream's field,
#  the filter message): the runtime service's lists with a label filter.
_RUNTIME_LISTS = (
    ("pods", "ListPodSandbox", api.ListPodSandboxRequest, "items", "StreamPodSandboxes",
     api.StreamPodSandboxesRequest, "pod_sandboxes", api.PodSandboxFilter),
    ("containers", "ListContainers", api.ListContainersRequest, "containers", "StreamContainers",
     api.StreamContainersRequest, "containers", api.ContainerFilter),
    ("container_stats", "ListContainerStats", api.ListContainerStatsRequest, "stats", "StreamContainerStats",
     api.StreamContainerStatsRequest, "container_stats", api.ContainerStatsFilter),
    ("pod_stats", "ListPodSandboxStats", api.ListPodSandboxStatsRequest, "stats", "StreamPodSandboxStats",
     api.StreamPodSandboxStatsRequest, "pod_sandbox_stats", api.PodSandboxStatsFilter),
)


def _compare_all(daemon: CribDaemon, expect: int) -> dict[str, int]:
    """Every Stream call against its List call (unfiltered and with a label filter); message counts."""
    rt, im = daemon.runtime, daemon.images
    counts: dict[str, int] = {}
    for selector in ({}, {"group": "1"}):
        for name, list_rpc, list_req, list_field, stream_rpc, stream_req, stream_field, fil in _RUNTIME_LISTS:
            f = fil(label_selector=selector)
            listed = list(getattr(getattr(rt, list_rpc)(list_req(filter=f), timeout=120), list_field))
            stream = list(getattr(rt, stream_rpc)(stream_req(filter=f), timeout=120))
            batches = _same_stream(listed, stream, stream_field)
            # Stats are read again by each call: compare them without their reading times.
            assert [_strip_timestamps(i) for b in batches for i in b][:50] == \
                [_strip_timestamps(i) for i in listed][:50]
            counts.setdefault(name, len(stream))
            if not selector:
                assert len(listed) == expect, name

    images = list(im.ListImages(api.ListImagesRequest()).images)
    stream = list(im.StreamImages(api.StreamImagesRequest(), timeout=120))
    batches = _same_stream(images, stream, "images")
    assert [i for b in batches for i in b] == images
    counts["images"] = len(stream)
    metrics = list(rt.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest()).pod_metrics)
    stream = list(rt.StreamPodSandboxMetrics(api.StreamPodSandboxMetricsRequest(), timeout=120))
    streamed = [p for m in stream for p in m.pod_sandbox_metrics]
    assert all(m.pod_sandbox_metrics for m in stream)
    assert [p.pod_sandbox_id for p in streamed] == [p.pod_sandbox_id for p in metrics]
    return counts


def test_streams_of_an_empty_node_end_at_once(crib: CribDaemon) -> None:
    counts = _compare_all(crib, 0)
    assert counts == {"pods": 0, "containers": 0, "container_stats": 0, "pod_stats": 0, "images": 0}


def test_streams_of_one_pod_and_container(crib: CribDaemon, images: img.Catalogue, session_tag: str) -> None:
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pod = Pod(crib, pod_config(session_tag))
    try:
        pod.run(container_config(busybox, labels={"group": "1"}, command=["sleep", "1000"]))
        counts = _compare_all(crib, 1)
        assert counts["containers"] == counts["container_stats"] == counts["images"] == 1
    finally:
        pod.remove()


@pytest.mark.timeout(600)
def test_streams_of_three_thousand_objects_come_in_chunks(crib_factory: Callable[..., CribDaemon]) -> None:
    daemon = crib_factory(start=False)
    _seed(daemon.root, MANY)
    daemon.start()
    counts = _compare_all(daemon, MANY)
    assert all(n >= 3 for n in counts.values()), counts  # 1000 items at most per message
    for reply in daemon.runtime.StreamContainerStats(api.StreamContainerStatsRequest(), timeout=120):
        assert reply.ByteSize() < 4 * 1024 * 1024
