"""cAdvisor samples, CRI metrics, Prometheus families, stream chunks and the operation counters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cri import metrics_convert, stats_convert
from crib.cri.chunks import chunked
from crib.metrics import ContainerReading, FsReading, PodReading, Sampler, cadvisor, ops
from crib.metrics.ops import BUCKETS, Histogram, Operations
from crib.metrics.prom import Exposition, NodeView
from crib.runtime.layout import Layout
from crib.state.records import ContainerRecord, Phase, PodMeta, SandboxRecord
from crib.system.cgroups import Cgroups
from crib.system.cgstats import CgroupStats, DeviceIo, Hugetlb, Psi
from crib.system.netdev import InterfaceStats

NOW = time.time_ns()


def _cgroup(**kw: object) -> CgroupStats:
    base: dict[str, object] = dict(
        timestamp_ns=NOW,
        cpu_usage_ns=2_700_000_000,
        cpu_user_ns=2_000_000_000,
        cpu_system_ns=700_000_000,
        cpu_periods=10,
        cpu_throttled_periods=2,
        cpu_throttled_ns=1_500_000_000,
        memory_usage=70 << 20,
        memory_max_usage=80 << 20,
        memory_working_set=66 << 20,
        memory_rss=64 << 20,
        memory_cache=6 << 20,
        memory_mapped_file=1 << 20,
        memory_kernel=1 << 16,
        memory_swap=0,
        memory_failcnt=1,
        pgfault=9,
        pgmajfault=1,
        pgfault_hierarchy=90,
        pgmajfault_hierarchy=2,
        oom_kills=1,
        cpu_shares=1024,
        cpu_quota_us=20000,
        cpu_period_us=100000,
        memory_limit=128 << 20,
        memory_swap_limit=128 << 20,
        pids=(10, 11),
        threads=3,
        pids_current=2,
        pids_limit=1000,
        file_descriptors=7,
        sockets=1,
        io=(
            DeviceIo(major=8, minor=0, name="/dev/sda", read_bytes=4096, write_bytes=8192, reads=1, writes=2),
        ),
        psi={k: Psi(some_total_us=3_000_000, full_total_us=1_000_000) for k in ("cpu", "memory", "io")},
        hugetlb=(Hugetlb(page_size="2MB", usage=0, max_usage=0),),
    )
    base.update(kw)
    return CgroupStats(**base)  # type: ignore[arg-type]


def _pod_reading() -> PodReading:
    sandbox = SandboxRecord(
        id="p" * 64,
        name="web_ns_uid_0",
        meta=PodMeta(name="web", uid="u", namespace="ns"),
        phase=Phase.CREATED,
        created_at=NOW - 10**10,
        cgroup_parent="/kubepods/p",
    )
    container = ContainerRecord(
        id="c" * 64,
        name="app_x_0",
        sandbox_id=sandbox.id,
        meta_name="app",
        phase=Phase.CREATED,
        created_at=NOW - 9 * 10**9,
        started_at=NOW - 8 * 10**9,
        image="busybox:latest",
        pid=10,
        cgroup_path="/kubepods/p/c",
    )
    fs = FsReading(
        timestamp_ns=NOW,
        mountpoint="/var/lib/crib/containers",
        device="/dev/vda",
        used_bytes=4096,
        inodes_used=12,
        capacity_bytes=10 << 30,
        inodes=1000,
        inodes_free=900,
    )
    c = ContainerReading(
        container=container, cgroup=_cgroup(), nano_cores=500_000_000, fs=fs, open_files_limit=1024
    )
    eth0 = InterfaceStats(name="eth0", rx_bytes=1 << 20, rx_packets=800, tx_bytes=4096, tx_packets=40)
    return PodReading(
        sandbox=sandbox,
        cgroup=_cgroup(),
        nano_cores=600_000_000,
        interfaces=(eth0,),
        network_timestamp_ns=NOW,
        containers=(c,),
    )


@pytest.mark.parametrize(("psi", "hugetlb"), [(True, True), (False, False)], ids=["all", "plain-v1"])
def test_every_descriptor_gets_values_with_its_label_count(psi: bool, hugetlb: bool) -> None:
    """What critest checks: each listed descriptor has a value in the pod or a container, labels fitting."""
    descs = cadvisor.descriptors(psi=psi, hugetlb=hugetlb)
    samples = cadvisor.pod_samples(_pod_reading(), psi=psi, hugetlb=hugetlb)
    found: dict[str, list[tuple[str, ...]]] = {}
    for group in (samples.pod, *samples.containers):
        assert len(group.labels) == len(cadvisor.BASE_LABELS)
        for name, kind, extra, _value, _ts in group.samples:
            assert kind == cadvisor.descriptor(name).kind, name
            found.setdefault(name, []).append((*group.labels, *extra))
    assert set(found) == {d.name for d in descs}
    for d in descs:
        assert d.help
        assert d.label_keys[:3] == ("id", "name", "image")
        assert all(len(labels) == len(d.label_keys) for labels in found[d.name]), d.name
    assert not {"namespace", "pod", "container"} & {k for d in descs for k in d.label_keys}


def test_cri_metrics_carry_values_in_their_unit_as_integers() -> None:
    pm = api.PodSandboxMetrics.FromString(
        metrics_convert.pod_metrics(_pod_reading(), psi=True, hugetlb=False)
    )
    by_name = {m.name: m for m in pm.container_metrics[0].metrics}
    assert pm.container_metrics[0].container_id == "c" * 64
    assert by_name["container_cpu_usage_seconds_total"].value.value == 2  # 2.7 s, truncated
    assert by_name["container_cpu_usage_seconds_total"].metric_type == api.COUNTER
    assert list(by_name["container_cpu_usage_seconds_total"].label_values) == [
        "c" * 64,
        "app",
        "busybox:latest",
        "total",
    ]
    assert by_name["container_memory_working_set_bytes"].value.value == 66 << 20
    assert by_name["container_memory_working_set_bytes"].metric_type == api.GAUGE
    assert by_name["container_fs_inodes_free"].value.value == 900
    assert by_name["container_ulimits_soft"].value.value == 1024
    assert by_name["container_start_time_seconds"].value.value == (NOW - 8 * 10**9) // 10**9
    pod = {(m.name, tuple(m.label_values)): m.value.value for m in pm.metrics}
    assert pod[("container_network_receive_bytes_total", ("p" * 64, "POD", "", "eth0"))] == 1 << 20
    assert not any(
        m.name.startswith("container_fs_usage") for m in pm.metrics
    )  # writable layers are per container
    names = [d.name for d in metrics_convert.descriptors(psi=False, hugetlb=False)]
    assert "container_pressure_cpu_waiting_seconds_total" not in names
    assert len(names) == len(set(names))


def test_hand_written_wire_bytes_are_what_protobuf_would_write() -> None:
    """metrics_convert writes PodSandboxMetrics as bytes; they must equal protobuf's own serialization."""
    reading = _pod_reading()
    samples = cadvisor.pod_samples(reading, psi=True, hugetlb=True)

    def metrics(group: cadvisor.Group) -> list[api.Metric]:
        return [
            api.Metric(
                name=name,
                timestamp=ts,
                metric_type=api.COUNTER if kind == cadvisor.COUNTER else api.GAUGE,
                label_values=[*group.labels, *extra],
                value=api.UInt64Value(value=max(0, int(value))),
            )
            for name, kind, extra, value, ts in group.samples
        ]

    want = api.PodSandboxMetrics(
        pod_sandbox_id=samples.pod_id,
        metrics=metrics(samples.pod),
        container_metrics=[
            api.ContainerMetrics(container_id=g.id, metrics=metrics(g)) for g in samples.containers
        ],
    )
    got = metrics_convert.pod_metrics(reading, psi=True, hugetlb=True)
    assert got == want.SerializeToString()
    response = metrics_convert.list_response([got, got])
    assert api.ListPodSandboxMetricsResponse.FromString(response).pod_metrics[1] == want


def test_stats_are_complete_and_unknowns_stay_unset() -> None:
    reading = _pod_reading()
    pod = stats_convert.pod_stats(reading)
    c = pod.linux.containers[0]
    assert c.cpu.usage_core_nano_seconds.value == 2_700_000_000
    assert c.cpu.usage_nano_cores.value == 500_000_000
    assert c.cpu.psi.Full.Total == 1_000_000_000  # µs -> ns
    assert (c.memory.working_set_bytes.value, c.memory.available_bytes.value) == (66 << 20, 62 << 20)
    assert c.memory.page_faults.value == 90
    assert c.swap.swap_usage_bytes.value == 0
    assert c.writable_layer.used_bytes.value == 4096
    assert c.writable_layer.inodes_used.value == 12
    assert c.io.psi.Some.Total == 3_000_000_000
    assert pod.linux.process.process_count.value == 2
    assert pod.linux.network.default_interface.rx_bytes.value == 1 << 20
    assert [i.name for i in pod.linux.network.interfaces] == ["eth0"]
    gone = ContainerReading(
        container=reading.containers[0].container,
        cgroup=CgroupStats(timestamp_ns=NOW, exists=False),
        nano_cores=None,
        fs=reading.containers[0].fs,
    )
    stats = stats_convert.container_stats(gone)
    assert not stats.HasField("cpu")
    assert not stats.HasField("memory")
    assert stats.HasField("writable_layer")


def test_prometheus_text_parses_and_carries_the_families() -> None:
    counters = Operations()
    counters.record("RunPodSandbox", "OK", 0.2)
    counters.record("RunPodSandbox", "UNKNOWN", 0.002)
    snap = ops.Snapshot(
        calls=counters.calls,
        durations=counters.durations,
        image_pulls={"success": 2},
        image_pull_bytes=12345,
        cni={("ADD", "crib"): Histogram()},
        restored=4,
    )
    view = NodeView(
        ops=snap,
        pods={"ready": 1, "notready": 0},
        containers={"running": 1},
        sessions={"exec": 2},
        readings=[_pod_reading()],
        psi=True,
        hugetlb=False,
    )
    text = Exposition().render(view).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    calls = {tuple(sorted(s.labels.items())): s.value for s in families["crib_operations"].samples}
    assert calls[(("code", "OK"), ("operation", "RunPodSandbox"))] == 1
    hist = {
        s.name + str(s.labels.get("le", "")): s.value
        for s in families["crib_operation_duration_seconds"].samples
    }
    assert hist["crib_operation_duration_seconds_count"] == 2
    assert hist["crib_operation_duration_seconds_bucket0.25"] == 2
    assert hist["crib_operation_duration_seconds_bucket0.1"] == 1
    assert families["crib_pods"].samples[1].labels == {"state": "ready"}
    assert families["crib_image_pull_bytes"].samples[0].value == 12345
    assert families["crib_streaming_sessions"].samples[0].value == 2
    assert families["crib_restarts_restored"].samples[0].value == 4
    assert "process_resident_memory_bytes" in families
    work = families["container_memory_working_set_bytes"].samples
    assert {s.labels["container"] for s in work} == {"POD", "app"}
    app = next(s for s in work if s.labels["container"] == "app")
    assert app.labels == {
        "id": "c" * 64,
        "name": "app",
        "image": "busybox:latest",
        "namespace": "ns",
        "pod": "web",
        "container": "app",
    }
    assert app.value == 66 << 20
    cpu = next(s for s in families["container_cpu_usage_seconds"].samples if s.labels["container"] == "app")
    assert cpu.value == pytest.approx(2.7)  # Prometheus keeps the fraction CRI cannot
    assert families["container_memory_failcnt"].samples[0].name == "container_memory_failcnt"


def test_histogram_buckets_are_upper_inclusive() -> None:
    h = Histogram()
    for value in (0.0005, 0.0006, 1000.0):
        h.observe(value)
    assert h.counts[0] == 1
    assert h.counts[1] == 1
    assert h.counts[len(BUCKETS)] == 1
    assert h.total == pytest.approx(1000.0011)


@pytest.mark.parametrize("count", [0, 1, 7, 25], ids=lambda n: f"{n}-items")
def test_chunks_keep_order_never_repeat_and_are_never_empty(count: int) -> None:
    items = [api.PodSandbox(id=f"{i:064d}") for i in range(count)]
    batches = list(chunked(items, max_bytes=300, max_items=4))
    assert all(1 <= len(b) <= 4 for b in batches)
    assert all(sum(i.ByteSize() for i in b) <= 300 for b in batches)
    assert [i.id for b in batches for i in b] == [i.id for i in items]
    big = api.PodSandbox(id="x" * 1000)
    assert list(chunked([big, big], max_bytes=300)) == [[big], [big]]


_POD = SandboxRecord(id="s", name="s", meta=PodMeta(name="s", uid="u", namespace="n"), phase=Phase.CREATED,
                     cgroup_parent="/pod")


def _sampler(tmp_path: Path, files: dict[str, str]) -> tuple[Sampler, Path]:
    """A Sampler on a fake v2 tree holding the pod cgroup /pod with files; and that cgroup's directory."""
    cg = Cgroups(tmp_path / "none")
    cg.v2, cg.hierarchies = True, {"": tmp_path / "cg"}
    cgdir = tmp_path / "cg" / "pod"
    cgdir.mkdir(parents=True)
    for name, text in {"cgroup.procs": "", **files}.items():
        (cgdir / name).write_text(text)
    return Sampler(cgroups=cg, layout=Layout(tmp_path / "root", tmp_path / "run"), max_age=60.0), cgdir


def test_sampler_reuses_a_fresh_reading_and_rates_cpu(tmp_path: Path) -> None:
    sampler, cgdir = _sampler(tmp_path, {"cpu.stat": "usage_usec 1000000\n"})
    (first,) = sampler.pods([(_POD, [])])
    (cgdir / "cpu.stat").write_text("usage_usec 3000000\n")
    (again,) = sampler.pods([(_POD, [])])
    assert again.cgroup is first.cgroup  # within max_age: the same reading, files not read again
    sampler.max_age = 0.0
    time.sleep(0.01)
    (later,) = sampler.pods([(_POD, [])])
    assert later.cgroup.cpu_usage_ns == 3_000_000_000
    assert later.nano_cores is not None
    assert later.nano_cores > 0


@pytest.mark.parametrize(
    ("servicer", "service"),
    [("runtime", "RuntimeService"), ("image", "ImageService")],
    ids=["runtime", "image"],
)
def test_only_checkpoint_answers_unimplemented(servicer: str, service: str) -> None:
    from crib.cri.image_servicer import ImageServicer
    from crib.cri.runtime_servicer import RuntimeServicer
    from crib.cri.server import implemented_rpcs

    cls = RuntimeServicer if servicer == "runtime" else ImageServicer
    methods = {m.name for m in api.DESCRIPTOR.services_by_name[service].methods}
    assert methods - implemented_rpcs(cls) <= {"CheckpointContainer"}  # criu fails on this project's kernels


def test_a_full_reading_serves_stats_but_a_stats_reading_does_not_serve_metrics(tmp_path: Path) -> None:
    sampler, _ = _sampler(tmp_path, {"cpu.stat": "usage_usec 1\n", "cgroup.threads": "\n\n",
                                     "memory.current": "4096\n"})
    (stats,) = sampler.pods([(_POD, [])])
    assert not stats.cgroup.full
    assert stats.cgroup.threads is None  # not read for stats
    (metrics,) = sampler.pods([(_POD, [])], full=True)
    assert metrics.cgroup.full
    assert metrics.cgroup.threads == 2
    (again,) = sampler.pods([(_POD, [])])
    assert again.cgroup is metrics.cgroup
