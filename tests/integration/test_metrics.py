"""CRI metrics and stats against what the containers really do: CPU burnt, memory held, files written,
bytes received on the pod's interface, OOM kills. Every figure is checked against the cause the test made
(and, where the kernel keeps it, against the cgroup file itself), through the daemon's gRPC API.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed
from tests.fixtures.cri import Pod, container_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon
from tests.integration.net_helpers import daemon_on, pod_config, pod_ips

MiB = 1 << 20
CGROUP = Path("/sys/fs/cgroup")
# A shell that holds 64 MiB in a variable; busybox sh execs a script's last command, so it loops instead.
HOLD_64M = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo held > /tmp/held; while :; do sleep 3600; done"
# Children that ask for 64 MiB under a 32 MiB limit; they volunteer for the OOM killer, the loop survives.
OOM_LOOP = (
    "while :; do sh -c 'echo 1000 > /proc/self/oom_score_adj; x=$(head -c 67108864 /dev/zero | "
    'tr "\\0" a)\'; sleep 1; done'
)
WRITE_10 = (
    "mkdir /data; for i in $(seq 1 10); do head -c 8192 /dev/urandom > /data/f$i; done; "
    "while :; do sleep 3600; done"
)


class Metrics:
    """One ListPodSandboxMetrics answer, looked up by container (None = the pod), name and labels."""

    def __init__(self, daemon: CribDaemon, sid: str) -> None:
        keys = {
            d.name: list(d.label_keys)
            for d in daemon.runtime.ListMetricDescriptors(api.ListMetricDescriptorsRequest()).descriptors
        }
        (pm,) = [
            p
            for p in daemon.runtime.ListPodSandboxMetrics(api.ListPodSandboxMetricsRequest()).pod_metrics
            if p.pod_sandbox_id == sid
        ]
        self.values: dict[tuple[str | None, str], list[tuple[dict[str, str], int]]] = {}
        groups: list[tuple[str | None, Any]] = [(None, pm.metrics)]
        groups += [(c.container_id, c.metrics) for c in pm.container_metrics]
        for cid, metrics in groups:
            for m in metrics:
                labels = dict(zip(keys[m.name], m.label_values, strict=True))
                self.values.setdefault((cid, m.name), []).append((labels, m.value.value))

    def get(self, cid: str | None, name: str, **labels: str) -> int:
        found = [
            v for lab, v in self.values.get((cid, name), []) if all(lab[k] == x for k, x in labels.items())
        ]
        assert len(found) == 1, f"{name} of {cid}: {self.values.get((cid, name))}"
        return found[0]


def _cgroup_file(controller: str, pid: int, name: str) -> str:
    path = next(
        line.split(":", 2)[2]
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if line.split(":")[1] == controller
    )
    return (CGROUP / controller / path.lstrip("/") / name).read_text()


def _pid(pod: Pod, cid: str) -> int:
    import json

    info = pod.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"]
    return int(json.loads(info)["pid"])


def _send(ip: str, port: int, payload: bytes) -> bool:
    """Whether payload went through whole (nc serves one connection at a time, so a try may be refused)."""
    try:
        with socket.create_connection((ip, port), timeout=10) as conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # nc closes once it has read everything
        return True
    except OSError:
        return False


def test_metrics_and_stats_follow_what_the_containers_do(
    crib_factory: Callable[..., CribDaemon],
    bed: Testbed,
    images: img.Catalogue,
    session_tag: str,
    tmp_path: Path,
) -> None:
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    busybox = images.reference(img.BUSYBOX)
    pull(daemon, busybox)
    pod = Pod(daemon, pod_config(session_tag))
    bed.sandbox_ids.append(pod.id)
    try:
        burn = pod.run(container_config(busybox, "burn", command=["sh", "-c", "while :; do :; done"]))
        hold = pod.run(container_config(busybox, "hold", command=["sh", "-c", HOLD_64M]))
        files = pod.run(container_config(busybox, "files", command=["sh", "-c", WRITE_10]))
        listen = pod.run(
            container_config(
                busybox, "listen", command=["sh", "-c", "while :; do nc -l -p 8080 > /dev/null; done"]
            )
        )
        oom = container_config(busybox, "oom", command=["sh", "-c", OOM_LOOP])
        oom.linux.resources.memory_limit_in_bytes = 32 * MiB
        oom = pod.run(oom)

        def stats(cid: str) -> api.ContainerStats:
            return pod.rt.ContainerStats(api.ContainerStatsRequest(container_id=cid)).stats

        # One second of CPU burnt, as the cgroup counts it.
        wait_for(
            lambda: stats(burn).cpu.usage_core_nano_seconds.value >= 1_100_000_000, 120, 0.2, "1 s of CPU"
        )
        wait_for(lambda: pod.exec(hold, "cat", "/tmp/held").stdout == b"held\n", 60, 0.2, "64 MiB held")
        wait_for(
            lambda: (
                stats(oom).memory.working_set_bytes.value > 0
                and int(_cgroup_file("memory", _pid(pod, oom), "memory.oom_control").split("oom_kill ")[1])
                >= 1
            ),
            60,
            0.2,
            "an OOM kill",
        )
        ip = pod_ips(daemon, pod.id)[0]
        before = Metrics(daemon, pod.id).get(None, "container_network_receive_bytes_total", interface="eth0")
        wait_for(lambda: _send(ip, 8080, b"x" * MiB), 30, 0.1, "1 MiB sent to the pod")
        wait_for(
            lambda: (
                Metrics(daemon, pod.id).get(None, "container_network_receive_bytes_total", interface="eth0")
                >= before + MiB
            ),
            10,
            0.2,
            "1 MiB received",
        )

        m = Metrics(daemon, pod.id)
        cpu_file = int(_cgroup_file("cpuacct", _pid(pod, burn), "cpuacct.usage"))
        cpu = m.get(burn, "container_cpu_usage_seconds_total", cpu="total")
        assert 1 <= cpu <= cpu_file // 10**9
        user, system = (
            m.get(burn, "container_cpu_user_seconds_total"),
            m.get(burn, "container_cpu_system_seconds_total"),
        )
        assert user + system >= cpu - 1  # each is truncated to whole seconds
        assert m.get(None, "container_cpu_usage_seconds_total", cpu="total") >= cpu

        assert m.get(hold, "container_memory_rss") >= 64 * MiB
        assert m.get(hold, "container_memory_working_set_bytes") >= 64 * MiB
        assert m.get(hold, "container_memory_usage_bytes") >= m.get(
            hold, "container_memory_working_set_bytes"
        )
        assert (
            m.get(None, "container_memory_working_set_bytes") >= 64 * MiB
        )  # the pod holds what its containers do
        hold_stats = stats(hold)
        assert hold_stats.memory.rss_bytes.value >= 64 * MiB
        assert hold_stats.memory.working_set_bytes.value >= 64 * MiB
        assert not hold_stats.memory.HasField("available_bytes")  # no limit: nothing to be available against

        assert m.get(oom, "container_oom_events_total") >= 1
        assert m.get(oom, "container_spec_memory_limit_bytes") == 32 * MiB
        assert stats(oom).memory.available_bytes.value <= 32 * MiB
        assert pod.status(oom).state == api.CONTAINER_RUNNING  # its children were killed, not the container

        fs = stats(files).writable_layer
        assert fs.used_bytes.value >= 10 * 8192
        assert fs.inodes_used.value >= 11  # /data and its ten files
        device = next(lab["device"] for lab, _ in m.values[(files, "container_fs_usage_bytes")])
        assert m.get(files, "container_fs_usage_bytes", device=device) >= 10 * 8192
        assert m.get(files, "container_fs_limit_bytes", device=device) > m.get(
            files, "container_fs_usage_bytes", device=device
        )

        eth0 = m.get(None, "container_network_receive_bytes_total", interface="eth0")
        assert eth0 >= before + MiB
        assert m.get(None, "container_network_receive_packets_total", interface="eth0") >= MiB // 65536
        pstats = pod.rt.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=pod.id)).stats.linux
        assert pstats.network.default_interface.name == "eth0"
        assert pstats.network.default_interface.rx_bytes.value >= eth0
        assert pstats.process.process_count.value >= 5
        assert {c.attributes.id for c in pstats.containers} == {burn, hold, files, listen, oom}
        assert m.get(listen, "container_sockets") >= 1
        assert m.get(burn, "container_processes") == 1
        assert m.get(burn, "container_threads") >= 1
        assert m.get(burn, "container_start_time_seconds") > 0

        # usage_nano_cores: the rate between two readings (max_age is 1 s) of a container burning one CPU.
        wait_for(lambda: stats(burn).cpu.usage_nano_cores.value > 100_000_000, 30, 0.5, "a CPU rate")
    finally:
        pod.remove()
