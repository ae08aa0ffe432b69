"""Cgroup readings from fake v1 and v2 trees: every field from the file that holds it, nothing invented."""

from __future__ import annotations

from pathlib import Path

import pytest

from crib.system import cgstats
from crib.system.cgroups import Cgroups
from crib.system.cgstats import CgroupReader
from crib.system.netdev import parse_net_dev

PSI = (
    "some avg10=1.50 avg60=0.75 avg300=0.10 total=2500000\n"
    "full avg10=0.50 avg60=0.25 avg300=0.05 total=1000000\n"
)


def _write(base: Path, files: dict[str, str]) -> None:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text)


def _layout(root: Path, *, v2: bool) -> Cgroups:
    """A Cgroups whose hierarchies are directories under root (the probe itself reads /proc)."""
    cg = Cgroups(root / "none")
    cg.v2 = v2
    if v2:
        cg.hierarchies = {"": root}
    else:
        cg.hierarchies = {c: root / c for c in ("cpu", "cpuacct", "memory", "pids", "blkio")}
        cg.hierarchies["unified"] = root / "unified"
        _write(root / "unified", {"cpu.pressure": PSI})
    return cg


def test_v1_reading_takes_each_figure_from_its_file(tmp_path: Path) -> None:
    cg = _layout(tmp_path, v2=False)
    pod = "/kubepods/pod1"
    _write(
        tmp_path / "cpuacct" / pod.strip("/"),
        {"cpuacct.usage": "3000000000\n", "cpuacct.stat": "user 150\nsystem 50\n"},
    )
    _write(
        tmp_path / "cpu" / pod.strip("/"),
        {
            "cpu.stat": "nr_periods 40\nnr_throttled 4\nthrottled_time 2000000000\n",
            "cpu.shares": "512\n",
            "cpu.cfs_quota_us": "50000\n",
            "cpu.cfs_period_us": "100000\n",
        },
    )
    _write(
        tmp_path / "memory" / pod.strip("/"),
        {
            "memory.usage_in_bytes": "100000\n",
            "memory.max_usage_in_bytes": "150000\n",
            "memory.limit_in_bytes": "67108864\n",
            "memory.soft_limit_in_bytes": "9223372036854771712\n",
            "memory.memsw.limit_in_bytes": "134217728\n",
            "memory.failcnt": "3\n",
            "memory.kmem.usage_in_bytes": "4096\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            "memory.stat": "cache 10\nrss 20\npgfault 5\npgmajfault 1\ntotal_cache 30000\ntotal_rss 40000\n"
            "total_mapped_file 5000\ntotal_swap 0\ntotal_inactive_file 20000\ntotal_pgfault 50\n"
            "total_pgmajfault 2\n",
        },
    )
    _write(
        tmp_path / "pids" / pod.strip("/"),
        {"cgroup.procs": "", "tasks": "", "pids.current": "3\n", "pids.max": "max\n"},
    )
    _write(
        tmp_path / "blkio" / pod.strip("/"),
        {
            "blkio.throttle.io_service_bytes_recursive": (
                "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n"
            ),
            "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
        },
    )
    _write(tmp_path / "unified" / pod.strip("/"), {"cpu.pressure": PSI, "memory.pressure": PSI})

    s = CgroupReader(cg).read(pod)

    assert s.exists
    assert (s.cpu_usage_ns, s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_ns) == (
        3_000_000_000,
        40,
        4,
        2_000_000_000,
    )
    tick = 1_000_000_000 // cgstats._CLK_TCK
    assert (s.cpu_user_ns, s.cpu_system_ns) == (150 * tick, 50 * tick)
    assert (s.cpu_shares, s.cpu_quota_us, s.cpu_period_us) == (512, 50000, 100000)
    assert (s.memory_usage, s.memory_max_usage, s.memory_working_set) == (100000, 150000, 80000)
    assert (s.memory_cache, s.memory_rss, s.memory_mapped_file, s.memory_swap) == (30000, 40000, 5000, 0)
    assert (s.memory_failcnt, s.memory_kernel, s.oom_kills) == (3, 4096, 2)
    assert (s.pgfault, s.pgmajfault, s.pgfault_hierarchy, s.pgmajfault_hierarchy) == (5, 1, 50, 2)
    assert (s.memory_limit, s.memory_reservation, s.memory_swap_limit, s.swap_limit) == (
        67108864,
        None,
        134217728,
        67108864,
    )
    assert s.memory_available == 67108864 - 80000
    assert (s.pids_current, s.pids_limit, s.threads, s.pids) == (3, None, 0, ())
    assert [(d.major, d.minor, d.read_bytes, d.write_bytes, d.reads, d.writes) for d in s.io] == [
        (8, 0, 4096, 8192, 1, 2)
    ]
    assert set(s.psi) == {"cpu", "memory"}
    assert s.psi["cpu"].full_total_us == 1000000
    assert s.psi["cpu"].some_avg10 == pytest.approx(1.5)


def test_v2_reading(tmp_path: Path) -> None:
    cg = _layout(tmp_path, v2=True)
    _write(tmp_path, {"cgroup.controllers": "cpu memory pids io\n", "cpu.pressure": PSI})
    _write(
        tmp_path / "pod2",
        {
            "cgroup.procs": f"{1}\n",
            "cgroup.threads": "1\n",
            "cpu.stat": "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 7\nnr_throttled 1\n"
            "throttled_usec 300\n",
            "cpu.max": "20000 100000\n",
            "cpu.weight": "100\n",
            "memory.current": "5000\n",
            "memory.peak": "9000\n",
            "memory.max": "max\n",
            "memory.low": "0\n",
            "memory.swap.current": "100\n",
            "memory.swap.max": "1000\n",
            "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
            "memory.stat": "anon 3000\nfile 1000\nfile_mapped 200\nkernel 700\ninactive_file 400\npgfault 9\n"
            "pgmajfault 0\n",
            "pids.current": "1\n",
            "pids.max": "100\n",
            "io.stat": "253:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
            "cpu.pressure": PSI,
            "memory.pressure": PSI,
            "io.pressure": PSI,
        },
    )

    s = CgroupReader(cg).read("/pod2")

    assert (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns, s.cpu_throttled_ns) == (
        2_000_000,
        1_500_000,
        500_000,
        300_000,
    )
    # weight 100 (the v2 default) is what runc writes for 2597 shares: the inverse of its conversion
    assert (s.cpu_quota_us, s.cpu_period_us, s.cpu_shares) == (20000, 100000, 2597)
    assert (s.memory_usage, s.memory_max_usage, s.memory_working_set, s.memory_limit) == (
        5000,
        9000,
        4600,
        None,
    )
    assert (s.memory_rss, s.memory_cache, s.memory_mapped_file, s.memory_kernel) == (3000, 1000, 200, 700)
    assert (s.memory_swap, s.swap_limit, s.swap_available, s.memory_failcnt, s.oom_kills) == (
        100,
        1000,
        900,
        4,
        1,
    )
    assert s.memory_reservation is None
    assert s.memory_available is None
    assert (s.pids, s.threads, s.pids_limit) == ((1,), 1, 100)
    assert [(d.read_bytes, d.write_bytes) for d in s.io] == [(10, 20)]
    assert set(s.psi) == {"cpu", "memory", "io"}


def test_a_gone_cgroup_reads_as_absent(tmp_path: Path) -> None:
    assert not CgroupReader(_layout(tmp_path, v2=True)).read("/nope").exists
    assert not CgroupReader(_layout(tmp_path, v2=False)).read("/nope").exists


def test_net_dev_leaves_loopback_out() -> None:
    text = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo "
        "colls carrier compressed\n"
        "    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0 "
        "    0       0          0\n"
        "  eth0: 1048576     800    2    3    0     0          0         0     4096      40    4    5    0 "
        "    0       0          0\n"
    )
    (eth0,) = parse_net_dev(text)
    assert (eth0.name, eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped) == (
        "eth0",
        1048576,
        800,
        2,
        3,
    )
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped) == (4096, 40, 4, 5)


def test_process_files_counts_this_process() -> None:
    import os
    import socket

    with socket.socket() as _:
        fds, sockets = cgstats.process_files((os.getpid(),))
    assert fds is not None
    assert sockets is not None
    assert fds >= 4
    assert sockets >= 1
    assert cgstats.soft_open_files_limit(os.getpid()) is not None
