"""Pod-level limits: resources plus overhead, and cgroup writes that are all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from crib import errors
from crib._proto.runtime.v1 import api_pb2 as api
from crib.oci import HostFacts
from crib.sandbox.resources import pod_limits, record_of
from crib.system.cgroups import Cgroups, CgroupWriteError

HOST = HostFacts(
    arch="amd64",
    capabilities=frozenset(),
    apparmor_enabled=False,
    seccomp_enabled=True,
    rro_supported=False,
    oom_score_adj_min=0,
    cgroup_v2=False,
    swap_controller=True,
    hugetlb_controller=True,
)


def test_resources_and_overhead_add_up_where_kubelet_adds_them() -> None:
    res = api.LinuxContainerResources(
        cpu_shares=512,
        cpu_quota=50000,
        cpu_period=100000,
        memory_limit_in_bytes=64 << 20,
        cpuset_cpus="0",
        hugepage_limits=[api.HugepageLimit(page_size="2MB", limit=4 << 20)],
    )
    overhead = api.LinuxContainerResources(
        cpu_shares=2,
        cpu_quota=10000,
        memory_limit_in_bytes=8 << 20,
        hugepage_limits=[api.HugepageLimit(page_size="2MB", limit=2 << 20)],
    )
    limits = pod_limits(res, overhead, pod="web", host=HOST)
    assert limits["cpu"] == {"shares": 514, "quota": 60000, "period": 100000, "cpus": "0"}
    assert limits["memory"] == {"limit": 72 << 20}  # no swap limit asked for the pod: none written
    assert limits["hugepageLimits"] == [{"pageSize": "2MB", "limit": 6 << 20}]
    rec = record_of(limits)
    assert (rec.cpu_shares, rec.cpu_quota, rec.memory_limit_in_bytes, rec.cpuset_cpus) == (
        514,
        60000,
        72 << 20,
        "0",
    )
    assert pod_limits(api.LinuxContainerResources(), api.LinuxContainerResources(), pod="x", host=HOST) == {}


def test_bad_pod_resources_name_the_pod() -> None:
    with pytest.raises(errors.InvalidArgument, match="pod 'web': resources: cpu_shares -1"):
        pod_limits(
            api.LinuxContainerResources(cpu_shares=-1), api.LinuxContainerResources(), pod="web", host=HOST
        )


def _v1(root: Path) -> Cgroups:
    cg = Cgroups(root / "none")
    cg.v2 = False
    cg.hierarchies = {c: root / c for c in ("cpu", "cpuset", "memory")}
    for c in ("cpu", "cpuset", "memory"):
        (root / c / "pod").mkdir(parents=True)
    for name, value in (
        ("cpu/pod/cpu.shares", "1024"),
        ("cpu/pod/cpu.cfs_period_us", "100000"),
        ("cpu/pod/cpu.cfs_quota_us", "-1"),
        ("cpuset/pod/cpuset.cpus", "0-1"),
        ("memory/pod/memory.limit_in_bytes", "9223372036854771712"),
    ):
        (root / name).write_text(value + "\n")
    return cg


def test_limits_are_written_to_their_files(tmp_path: Path) -> None:
    cg = _v1(tmp_path)
    cg.write_limits(
        "/pod",
        {"cpu": {"shares": 256, "quota": 20000, "period": 50000, "cpus": "1"}, "memory": {"limit": 32 << 20}},
    )
    assert (tmp_path / "cpu/pod/cpu.shares").read_text() == "256"
    assert (tmp_path / "cpu/pod/cpu.cfs_quota_us").read_text() == "20000"
    assert (tmp_path / "cpu/pod/cpu.cfs_period_us").read_text() == "50000"
    assert (tmp_path / "cpuset/pod/cpuset.cpus").read_text() == "1"
    assert (tmp_path / "memory/pod/memory.limit_in_bytes").read_text() == str(32 << 20)


def test_a_refused_write_puts_back_what_was_written(tmp_path: Path) -> None:
    cg = _v1(tmp_path)
    (tmp_path / "memory/pod/memory.limit_in_bytes").unlink()
    (tmp_path / "memory/pod/memory.limit_in_bytes").mkdir()  # the "kernel" refuses this one
    with pytest.raises(CgroupWriteError, match=r"memory\.limit_in_bytes"):
        cg.write_limits("/pod", {"cpu": {"shares": 256, "cpus": "1"}, "memory": {"limit": 32 << 20}})
    assert (tmp_path / "cpu/pod/cpu.shares").read_text().strip() == "1024"
    assert (tmp_path / "cpuset/pod/cpuset.cpus").read_text().strip() == "0-1"


def test_v2_limits(tmp_path: Path) -> None:
    cg = Cgroups(tmp_path / "none")
    cg.v2, cg.hierarchies = True, {"": tmp_path}
    (tmp_path / "pod").mkdir()
    for name in ("cpu.weight", "cpu.max", "memory.max", "memory.swap.max", "memory.high"):
        (tmp_path / "pod" / name).write_text("max\n")
    cg.write_limits(
        "/pod",
        {
            "cpu": {"shares": 1024, "quota": 20000, "period": 100000},
            "memory": {"limit": 64 << 20, "swap": 96 << 20},
            "unified": {"memory.high": "50000000"},
        },
    )
    assert (tmp_path / "pod/cpu.weight").read_text() == "39"
    assert (tmp_path / "pod/cpu.max").read_text() == "20000 100000"
    assert (tmp_path / "pod/memory.max").read_text() == str(64 << 20)
    assert (tmp_path / "pod/memory.swap.max").read_text() == str(32 << 20)
    assert (tmp_path / "pod/memory.high").read_text() == "50000000"
