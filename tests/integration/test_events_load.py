"""GetContainerEvents under load: 200 containers created, started, stopped (half exit by themselves, half are
stopped) and removed concurrently across ten pods; every container's events arrive, in lifecycle order."""

from __future__ import annotations

import concurrent.futures
import threading

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon

PODS = 10
PER_POD = 20
ORDER = [
    api.CONTAINER_CREATED_EVENT,
    api.CONTAINER_STARTED_EVENT,
    api.CONTAINER_STOPPED_EVENT,
    api.CONTAINER_DELETED_EVENT,
]


@pytest.mark.timeout(900)
def test_two_hundred_containers_events_stay_in_order(
    crib: CribDaemon, images: img.Catalogue, session_tag: str
) -> None:
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pods = [Pod(crib, pod_config(session_tag, f"ev{i}")) for i in range(PODS)]
    events: dict[str, list[api.ContainerEventResponse]] = {}
    deleted: set[str] = set()
    lock = threading.Lock()
    stream = crib.runtime.GetContainerEvents(api.GetEventsRequest())

    def consume() -> None:
        try:
            for event in stream:
                with lock:
                    events.setdefault(event.container_id, []).append(event)
                    if event.container_event_type == api.CONTAINER_DELETED_EVENT:
                        deleted.add(event.container_id)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:  # the test's own cancel() ends the stream
                raise

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        # The subscription exists once the daemon has sent something on it: a throw-away container's events.
        probe = pods[0].create(container_config(busybox, "probe", command=["true"]))
        wait_for(lambda: probe in events, 30, 0.05, "the event stream to start")

        def lifecycle(n: int) -> str:
            pod = pods[n % PODS]
            exits = n % 2 == 0
            command = ["sh", "-c", "exit 0"] if exits else ["sleep", "1000"]
            cid = pod.run(container_config(busybox, f"c{n}", command=command))
            if exits:
                pod.wait_exit(cid, 120)
            else:
                pod.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0), timeout=120)
            pod.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid), timeout=120)
            return cid

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            cids = list(pool.map(lifecycle, range(PODS * PER_POD)))
        wait_for(lambda: set(cids) <= deleted, 120, 0.1, "every DELETED event")
    finally:
        stream.cancel()
        reader.join(10)
        for pod in pods:
            pod.remove()

    assert len(set(cids)) == PODS * PER_POD
    for cid in cids:
        got = events[cid]
        assert [e.container_event_type for e in got] == ORDER, cid
        stamps = [e.created_at for e in got]
        assert stamps == sorted(stamps), cid
        assert got[0].pod_sandbox_status.id in {p.id for p in pods}
        assert next(s for s in got[2].containers_statuses if s.id == cid).state == api.CONTAINER_EXITED
