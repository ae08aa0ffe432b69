"""UpdatePodSandboxResources (in-place pod resize) on the pod cgroup crib made: the files change, status and
metrics say so, and what the kernel or the pod's use rules out is refused without changing anything."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon
from tests.integration.test_metrics import HOLD_64M, Metrics, MiB

CGROUP = Path("/sys/fs/cgroup")


def _file(controller: str, cgroup: str, name: str) -> str:
    return (CGROUP / controller / cgroup.lstrip("/") / name).read_text().strip()


def _update(pod: Pod, **kw: api.LinuxContainerResources) -> None:
    pod.rt.UpdatePodSandboxResources(
        api.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod.id, **kw), timeout=30
    )


def test_resize_reaches_the_cgroup_status_and_metrics(
    crib: CribDaemon, images: img.Catalogue, session_tag: str
) -> None:
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pod = Pod(crib, pod_config(session_tag))
    cgroup = pod.config.linux.cgroup_parent
    try:
        # The CPU set first, while the pod is empty: v1 refuses to take CPUs from a cpuset its children use.
        _update(pod, resources=api.LinuxContainerResources(cpuset_cpus="0"))
        assert _file("cpuset", cgroup, "cpuset.cpus") == "0"
        holder = container_config(busybox, "hold", command=["sh", "-c", HOLD_64M])
        holder.linux.resources.cpu_quota, holder.linux.resources.cpu_period = 40000, 100000
        cid = pod.run(holder)
        wait_for(lambda: pod.exec(cid, "cat", "/tmp/held").stdout == b"held\n", 60, 0.2, "64 MiB held")

        _update(
            pod,
            resources=api.LinuxContainerResources(
                cpu_shares=512,
                cpu_quota=50000,
                cpu_period=100000,
                memory_limit_in_bytes=256 * MiB,
                cpuset_cpus="0",
            ),
            overhead=api.LinuxContainerResources(cpu_shares=2, memory_limit_in_bytes=16 * MiB),
        )
        assert _file("cpu", cgroup, "cpu.shares") == "514"
        assert _file("cpu", cgroup, "cpu.cfs_quota_us") == "50000"
        assert _file("cpu", cgroup, "cpu.cfs_period_us") == "100000"
        assert _file("memory", cgroup, "memory.limit_in_bytes") == str(272 * MiB)
        assert _file("cpuset", cgroup, "cpuset.cpus") == "0"

        status = pod.rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id, verbose=True))
        resources = json.loads(status.info["info"])["resources"]
        assert (resources["cpu_shares"], resources["memory_limit_in_bytes"], resources["cpuset_cpus"]) == (
            514,
            272 * MiB,
            "0",
        )
        m = Metrics(crib, pod.id)
        assert m.get(None, "container_spec_memory_limit_bytes") == 272 * MiB
        assert m.get(None, "container_spec_cpu_shares") == 514
        assert m.get(None, "container_spec_cpu_quota") == 50000

        # Below what the pod holds (64 MiB in a shell variable): refused, nothing written.
        code, message = code_of(
            lambda: _update(pod, resources=api.LinuxContainerResources(memory_limit_in_bytes=16 * MiB))
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "uses now" in message
        assert _file("memory", cgroup, "memory.limit_in_bytes") == str(272 * MiB)

        # A quota below the container's own: the kernel refuses, and the shares written before it go back.
        code, message = code_of(
            lambda: _update(
                pod,
                resources=api.LinuxContainerResources(cpu_shares=1024, cpu_quota=20000, cpu_period=100000),
            )
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "cfs_quota_us" in message
        assert _file("cpu", cgroup, "cpu.shares") == "514"
        assert _file("cpu", cgroup, "cpu.cfs_quota_us") == "50000"

        for request, want in (
            (
                api.UpdatePodSandboxResourcesRequest(
                    pod_sandbox_id=pod.id, resources=api.LinuxContainerResources(cpu_shares=-1)
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (api.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod.id), grpc.StatusCode.INVALID_ARGUMENT),
            (
                api.UpdatePodSandboxResourcesRequest(
                    pod_sandbox_id="0" * 64, resources=api.LinuxContainerResources(cpu_shares=2)
                ),
                grpc.StatusCode.NOT_FOUND,
            ),
        ):
            assert code_of(lambda r=request: pod.rt.UpdatePodSandboxResources(r))[0] == want
    finally:
        pod.remove()
