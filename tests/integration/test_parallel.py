"""Concurrency and failure hygiene: parallel pods and containers, and a failure at every create step."""

from __future__ import annotations

import concurrent.futures

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull
from tests.fixtures.daemon import CribDaemon

PODS = 20


def test_twenty_pods_with_two_containers_each_created_in_parallel(crib: CribDaemon, images: img.Catalogue,
                                                                 session_tag: str) -> None:
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pods: list[Pod] = []

    def one(i: int) -> tuple[Pod, list[str]]:
        pod = Pod(crib, pod_config(session_tag, f"par-{i}"))
        pods.append(pod)
        configs = [container_config(busybox, f"c{j}", command=["sleep", "1000"]) for j in range(2)]
        with concurrent.futures.ThreadPoolExecutor(2) as inner:
            ids = list(inner.map(pod.run, configs))
        return pod, ids

    try:
        with concurrent.futures.ThreadPoolExecutor(PODS) as pool:
            results = list(pool.map(one, range(PODS)))
        assert len(results) == PODS
        running = crib.runtime.ListContainers(api.ListContainersRequest(filter=api.ContainerFilter(
            state=api.ContainerStateValue(state=api.CONTAINER_RUNNING)))).containers
        assert len(running) == 2 * PODS
        assert len({c.pod_sandbox_id for c in running}) == PODS
    finally:
        with concurrent.futures.ThreadPoolExecutor(PODS) as pool:
            list(pool.map(lambda p: p.remove(), pods))
    assert not crib.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items


CONTAINER_FAILPOINTS = ["container.record", "container.dirs", "container.rootfs", "container.spec",
                        "container.conmon"]


@pytest.mark.parametrize("failpoint", CONTAINER_FAILPOINTS)
def test_a_failure_at_any_step_of_create_leaves_nothing(crib_factory, images: img.Catalogue, session_tag: str,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        failpoint: str) -> None:
    monkeypatch.setenv("CRIB_TESTING", "1")
    monkeypatch.setenv("CRIB_FAILPOINTS", failpoint)
    crib = crib_factory()
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pod = Pod(crib, pod_config(session_tag))
    try:
        code, message = code_of(lambda: pod.create(container_config(busybox, command=["sleep", "100"])))
        assert code == grpc.StatusCode.UNKNOWN
        assert failpoint in message
        assert not crib.runtime.ListContainers(api.ListContainersRequest()).containers
        assert not list((crib.root / "containers").iterdir())
        assert not list((crib.runroot / "containers").iterdir())
        assert not list((crib.runroot / "runc").iterdir())
    finally:
        pod.remove()
    # The fixture's leak check: no mount, conmon, cgroup or file is left anywhere.
