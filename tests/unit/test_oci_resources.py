"""LinuxContainerResources -> linux.resources, oom_score_adj clamping, pids limit, rlimits."""

from __future__ import annotations

from typing import Any

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import Rlimit, build_container_spec, clamp_oom_score_adj, default_rlimits, linux_resources
from tests.unit.test_oci_inputs import container_config, container_inputs, host_facts

MiB = 1 << 20
TWO_MB_PAGES = api.HugepageLimit(page_size="2MB", limit=4 * MiB)

# (id, resources, host overrides, expected linux.resources fragment)
CONVERSIONS: list[tuple[str, api.LinuxContainerResources, dict[str, Any], dict[str, Any]]] = [
    ("nothing", api.LinuxContainerResources(), {}, {}),
    ("cpu-shares", api.LinuxContainerResources(cpu_shares=512), {}, {"cpu": {"shares": 512}}),
    ("quota-period", api.LinuxContainerResources(cpu_quota=50000, cpu_period=100000), {},
     {"cpu": {"quota": 50000, "period": 100000}}),
    ("quota-unlimited", api.LinuxContainerResources(cpu_quota=-1), {}, {"cpu": {"quota": -1}}),
    ("cpuset", api.LinuxContainerResources(cpuset_cpus="0-1,3", cpuset_mems="0"), {},
     {"cpu": {"cpus": "0-1,3", "mems": "0"}}),
    ("memory-without-swap-controller", api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB), {},
     {"memory": {"limit": 64 * MiB}}),
    ("memory-swap-equals-limit", api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB),
     {"swap_controller": True}, {"memory": {"limit": 64 * MiB, "swap": 64 * MiB}}),
    ("memory-and-swap", api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB,
                                                    memory_swap_limit_in_bytes=128 * MiB),
     {"swap_controller": True}, {"memory": {"limit": 64 * MiB, "swap": 128 * MiB}}),
    ("swap-unlimited",
     api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=-1),
     {"swap_controller": True}, {"memory": {"limit": 64 * MiB, "swap": -1}}),
    ("swap-ignored-without-controller", api.LinuxContainerResources(memory_swap_limit_in_bytes=128 * MiB), {},
     {}),
    ("hugepages", api.LinuxContainerResources(hugepage_limits=[TWO_MB_PAGES]),
     {"hugetlb_controller": True}, {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}]}),
    ("hugepages-skipped-without-controller", api.LinuxContainerResources(hugepage_limits=[TWO_MB_PAGES]), {},
     {}),
    ("unified-on-v2", api.LinuxContainerResources(unified={"memory.high": "1000000", "cpu.weight": "50"}),
     {"cgroup_v2": True}, {"unified": {"cpu.weight": "50", "memory.high": "1000000"}}),
]


@pytest.mark.parametrize(("resources", "host", "expected"), [row[1:] for row in CONVERSIONS],
                         ids=[row[0] for row in CONVERSIONS])
def test_conversion(resources: api.LinuxContainerResources, host: dict[str, Any],
                    expected: dict[str, Any]) -> None:
    assert linux_resources(resources, container="app", host=host_facts(**host)) == expected


ERRORS = [
    ("negative-shares", api.LinuxContainerResources(cpu_shares=-2), {}, "cpu_shares -2"),
    ("tiny-quota", api.LinuxContainerResources(cpu_quota=500), {}, "cpu_quota 500"),
    ("negative-quota", api.LinuxContainerResources(cpu_quota=-5), {}, "cpu_quota -5"),
    ("tiny-period", api.LinuxContainerResources(cpu_period=10), {}, "cpu_period 10"),
    ("huge-period", api.LinuxContainerResources(cpu_period=2_000_000), {}, "cpu_period 2000000"),
    ("bad-cpuset", api.LinuxContainerResources(cpuset_cpus="0-a"), {}, "cpuset_cpus '0-a'"),
    ("bad-mems", api.LinuxContainerResources(cpuset_mems="all"), {}, "cpuset_mems 'all'"),
    ("negative-memory", api.LinuxContainerResources(memory_limit_in_bytes=-1), {},
     "memory_limit_in_bytes -1"),
    ("bad-swap", api.LinuxContainerResources(memory_swap_limit_in_bytes=-2), {},
     "memory_swap_limit_in_bytes -2"),
    ("swap-below-limit", api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB,
                                                     memory_swap_limit_in_bytes=32 * MiB), {}, "below"),
    ("bad-page-size",
     api.LinuxContainerResources(hugepage_limits=[api.HugepageLimit(page_size="2M", limit=1)]),
     {"hugetlb_controller": True}, "page_size '2M'"),
    ("unified-on-v1", api.LinuxContainerResources(unified={"memory.high": "1"}), {}, "cgroup v1"),
]


@pytest.mark.parametrize(("resources", "host", "message"), [row[1:] for row in ERRORS],
                         ids=[row[0] for row in ERRORS])
def test_conversion_errors(resources: api.LinuxContainerResources, host: dict[str, Any],
                           message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        linux_resources(resources, container="app", host=host_facts(**host))
    assert str(info.value).startswith("container 'app': resources")


@pytest.mark.parametrize(("requested", "minimum", "expected"), [
    (-998, 0, 0), (-998, -1000, -998), (500, 0, 500), (0, -999, 0), (-1000, -1000, -1000),
], ids=["raised-to-daemon", "allowed", "above", "zero", "lowest"])
def test_clamp_oom_score_adj(requested: int, minimum: int, expected: int) -> None:
    assert clamp_oom_score_adj(requested, minimum) == expected


@pytest.mark.parametrize(("resources", "minimum", "expected"), [
    (None, 0, None),
    (api.LinuxContainerResources(), 0, 0),
    (api.LinuxContainerResources(oom_score_adj=-997), 0, 0),
    (api.LinuxContainerResources(oom_score_adj=-997), -1000, -997),
    (api.LinuxContainerResources(oom_score_adj=1000), 0, 1000),
], ids=["no-resources-unset", "zero", "clamped", "not-clamped", "max"])
def test_spec_oom_score_adj(resources: api.LinuxContainerResources | None, minimum: int,
                            expected: int | None) -> None:
    inputs = container_inputs(container_config(resources=resources),
                              host=host_facts(oom_score_adj_min=minimum))
    assert build_container_spec(inputs)["process"].get("oomScoreAdj") == expected


@pytest.mark.parametrize("value", [-1001, 1001], ids=["below", "above"])
def test_spec_oom_score_adj_out_of_range(value: int) -> None:
    config = container_config(resources=api.LinuxContainerResources(oom_score_adj=value))
    with pytest.raises(InvalidArgument, match=f"oom_score_adj {value} is outside"):
        build_container_spec(container_inputs(config))


def test_spec_resources_device_rules_kept_alongside() -> None:
    config = container_config(resources=api.LinuxContainerResources(cpu_shares=2,
                                                                     memory_limit_in_bytes=MiB * 8))
    spec = build_container_spec(container_inputs(config, host=host_facts(pids_limit=1024)))
    resources = spec["linux"]["resources"]
    assert resources["cpu"] == {"shares": 2}
    assert resources["memory"] == {"limit": 8 * MiB}
    assert resources["pids"] == {"limit": 1024}
    assert resources["devices"][0] == {"allow": False, "access": "rwm"}


def test_spec_no_pids_limit_by_default() -> None:
    assert "pids" not in build_container_spec(container_inputs())["linux"]["resources"]


@pytest.mark.parametrize(("hard", "expected"), [(20000, 20000), (1 << 30, 1048576)],
                         ids=["low-daemon", "high"])
def test_default_rlimits(hard: int, expected: int) -> None:
    assert default_rlimits(hard) == (Rlimit(type="RLIMIT_NOFILE", soft=expected, hard=expected),)


def test_spec_rlimits() -> None:
    assert "rlimits" not in build_container_spec(container_inputs())["process"]
    host = host_facts(rlimits=(*default_rlimits(20000), Rlimit(type="RLIMIT_NPROC", soft=10, hard=20)))
    assert build_container_spec(container_inputs(host=host))["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000},
        {"type": "RLIMIT_NPROC", "hard": 20, "soft": 10}]
