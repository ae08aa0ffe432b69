"""Readings as cAdvisor's container_* metrics: the names, types and label keys kubelet expects over CRI.

kubelet's CRI metrics collector (PodAndContainerStatsFromCRI) takes the descriptors from
ListMetricDescriptors once, then turns every Metric of ListPodSandboxMetrics into a Prometheus sample
named after its descriptor, with the descriptor's label keys followed by namespace, pod and container,
which kubelet adds itself. So the runtime's label keys must not include those three: crib uses
("id", "name", "image"), as CRI-O does, valued (container id, container name, image) for a container and
(pod id, "POD", "") for the pod's own metrics; metric-specific keys (cpu, interface, device, ...) follow.

The descriptor list is what this host can give (pressure metrics need PSI, huge page metrics a hugetlb
controller) and every descriptor listed gets a value for every running container or pod, with exactly as
many label values as it has keys: critest checks both, and kubelet drops a sample whose labels do not fit.
Values are numbers in the metric's own unit (seconds, bytes); CRI carries them as integers (cri/
metrics_convert.py truncates), Prometheus as they are. Pod-level metrics come from the pod's cgroup (all its
containers) plus the pod's network namespace; network counters are reported once, at the pod level.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from crib.metrics.sampler import ContainerReading, PodReading
from crib.system.cgstats import CgroupStats

COUNTER = "counter"
GAUGE = "gauge"
BASE_LABELS = ("id", "name", "image")
POD_CONTAINER_NAME = "POD"


@dataclass(frozen=True, slots=True)
class Descriptor:
    name: str
    help: str
    kind: str  # COUNTER or GAUGE
    labels: tuple[str, ...] = ()  # after BASE_LABELS
    needs: str = ""  # "psi" or "hugetlb": listed only where the host has it

    @property
    def label_keys(self) -> tuple[str, ...]:
        return BASE_LABELS + self.labels


_C, _G = COUNTER, GAUGE
_NET = ("interface",)
_DEV = ("device",)

DESCRIPTORS: tuple[Descriptor, ...] = (
    # cpu
    Descriptor("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", _C, ("cpu",)),
    Descriptor("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", _C),
    Descriptor("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", _C),
    Descriptor("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", _C),
    Descriptor("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", _C),
    Descriptor("container_cpu_cfs_throttled_seconds_total",
               "Total time duration the container has been throttled.", _C),
    # memory
    Descriptor("container_memory_usage_bytes",
               "Current memory usage in bytes, including all memory regardless of when it was accessed", _G),
    Descriptor("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", _G),
    Descriptor("container_memory_working_set_bytes", "Current working set in bytes.", _G),
    Descriptor("container_memory_rss", "Size of RSS in bytes.", _G),
    Descriptor("container_memory_cache", "Number of bytes of page cache memory.", _G),
    Descriptor("container_memory_mapped_file", "Size of memory mapped files in bytes.", _G),
    Descriptor("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", _G),
    Descriptor("container_memory_swap", "Container swap usage in bytes.", _G),
    Descriptor("container_memory_failcnt", "Number of memory usage hits limits", _C),
    Descriptor("container_memory_failures_total", "Cumulative count of memory allocation failures.", _C,
               ("failure_type", "scope")),
    Descriptor("container_oom_events_total", "Count of out of memory events observed for the container", _C),
    # network (pod level)
    Descriptor("container_network_receive_bytes_total", "Cumulative count of bytes received", _C, _NET),
    Descriptor("container_network_receive_packets_total", "Cumulative count of packets received", _C, _NET),
    Descriptor("container_network_receive_packets_dropped_total",
               "Cumulative count of packets dropped while receiving", _C, _NET),
    Descriptor("container_network_receive_errors_total",
               "Cumulative count of errors encountered while receiving", _C, _NET),
    Descriptor("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", _C, _NET),
    Descriptor("container_network_transmit_packets_total", "Cumulative count of packets transmitted", _C,
               _NET),
    Descriptor("container_network_transmit_packets_dropped_total",
               "Cumulative count of packets dropped while transmitting", _C, _NET),
    Descriptor("container_network_transmit_errors_total",
               "Cumulative count of errors encountered while transmitting", _C, _NET),
    # writable layer (container level)
    Descriptor("container_fs_usage_bytes",
               "Number of bytes that are consumed by the container on this filesystem.", _G, _DEV),
    Descriptor("container_fs_limit_bytes",
               "Number of bytes that can be consumed by the container on this filesystem.", _G, _DEV),
    Descriptor("container_fs_inodes_total", "Number of Inodes", _G, _DEV),
    Descriptor("container_fs_inodes_free", "Number of available Inodes", _G, _DEV),
    # block I/O (only devices the cgroup did I/O on)
    Descriptor("container_fs_reads_bytes_total", "Cumulative count of bytes read", _C, _DEV),
    Descriptor("container_fs_reads_total", "Cumulative count of reads completed", _C, _DEV),
    Descriptor("container_fs_writes_bytes_total", "Cumulative count of bytes written", _C, _DEV),
    Descriptor("container_fs_writes_total", "Cumulative count of writes completed", _C, _DEV),
    Descriptor("container_blkio_device_usage_total", "Blkio device bytes usage", _C,
               ("device", "major", "minor", "operation")),
    # processes
    Descriptor("container_processes", "Number of processes running inside the container.", _G),
    Descriptor("container_threads", "Number of threads running inside the container", _G),
    Descriptor("container_threads_max",
               "Maximum number of threads allowed inside the container, infinity if value is zero", _G),
    Descriptor("container_file_descriptors", "Number of open file descriptors for the container.", _G),
    Descriptor("container_sockets", "Number of open sockets for the container.", _G),
    Descriptor("container_ulimits_soft",
               "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice",
               _G, ("ulimit",)),
    # pressure stall information
    Descriptor("container_pressure_cpu_stalled_seconds_total",
               "Total time duration no tasks in the container could make progress due to CPU congestion.",
               _C, needs="psi"),
    Descriptor("container_pressure_cpu_waiting_seconds_total",
               "Total time duration tasks in the container have waited due to CPU congestion.", _C,
               needs="psi"),
    Descriptor("container_pressure_memory_stalled_seconds_total",
               "Total time duration no tasks in the container could make progress due to memory congestion.",
               _C, needs="psi"),
    Descriptor("container_pressure_memory_waiting_seconds_total",
               "Total time duration tasks in the container have waited due to memory congestion.", _C,
               needs="psi"),
    Descriptor("container_pressure_io_stalled_seconds_total",
               "Total time duration no tasks in the container could make progress due to IO congestion.",
               _C, needs="psi"),
    Descriptor("container_pressure_io_waiting_seconds_total",
               "Total time duration tasks in the container have waited due to IO congestion.", _C,
               needs="psi"),
    # huge pages
    Descriptor("container_hugetlb_usage_bytes", "Current hugepage usage in bytes.", _G, ("pagesize",),
               needs="hugetlb"),
    Descriptor("container_hugetlb_max_usage_bytes", "Maximum hugepage usage recorded in bytes.", _G,
               ("pagesize",), needs="hugetlb"),
    # misc and spec
    Descriptor("container_start_time_seconds", "Start time of the container since unix epoch in seconds.",
               _G),
    Descriptor("container_last_seen", "Last time a container was seen by the exporter", _G),
    Descriptor("container_spec_cpu_period", "CPU period of the container.", _G),
    Descriptor("container_spec_cpu_quota", "CPU quota of the container.", _G),
    Descriptor("container_spec_cpu_shares", "CPU share of the container.", _G),
    Descriptor("container_spec_memory_limit_bytes", "Memory limit for the container.", _G),
    Descriptor("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.",
               _G),
    Descriptor("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", _G),
)

_BY_NAME = {d.name: d for d in DESCRIPTORS}

# One sample: (name, COUNTER|GAUGE, the values of the descriptor's own label keys (after BASE_LABELS),
# value, timestamp in ns). The BASE_LABELS values are the group's, so converters format them once.
Sample = tuple[str, str, tuple[str, ...], float, int]
_NONE: tuple[str, ...] = ()
_TOTAL = ("total",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """The samples of the pod itself or of one container, with their shared label values."""

    id: str  # the pod's or the container's id
    labels: tuple[str, ...]  # values of BASE_LABELS
    container: str  # what kubelet calls the container: its name, or "POD" for the pod's own
    samples: list[Sample]


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSamples:
    """The metrics of one pod: its own (pod cgroup, network) and each container's."""

    pod_id: str
    pod: Group
    containers: list[Group]


def descriptors(*, psi: bool, hugetlb: bool) -> tuple[Descriptor, ...]:
    """The descriptors a host with (or without) PSI and a hugetlb controller can fill."""
    have = {"": True, "psi": psi, "hugetlb": hugetlb}
    return tuple(d for d in DESCRIPTORS if have[d.needs])


def container_labels(c: ContainerReading) -> tuple[str, ...]:
    rec = c.container
    return (rec.id, rec.meta_name, rec.image)


def pod_labels(p: PodReading) -> tuple[str, ...]:
    return (p.sandbox.id, POD_CONTAINER_NAME, "")


def _s(ns: int | None) -> float:
    return 0.0 if ns is None else ns / 1e9


def _n(value: int | None) -> int:
    return 0 if value is None else value


def _cgroup_samples(cg: CgroupStats, start_s: float, *, psi: bool, hugetlb: bool, out: list[Sample]) -> None:
    """The cgroup-derived samples of a pod or a container, appended to out."""
    ts = cg.timestamp_ns
    add = out.append
    add(("container_cpu_usage_seconds_total", _C, _TOTAL, _s(cg.cpu_usage_ns), ts))
    add(("container_cpu_user_seconds_total", _C, _NONE, _s(cg.cpu_user_ns), ts))
    add(("container_cpu_system_seconds_total", _C, _NONE, _s(cg.cpu_system_ns), ts))
    add(("container_cpu_cfs_periods_total", _C, _NONE, _n(cg.cpu_periods), ts))
    add(("container_cpu_cfs_throttled_periods_total", _C, _NONE, _n(cg.cpu_throttled_periods), ts))
    add(("container_cpu_cfs_throttled_seconds_total", _C, _NONE, _s(cg.cpu_throttled_ns), ts))
    add(("container_memory_usage_bytes", _G, _NONE, _n(cg.memory_usage), ts))
    add(("container_memory_max_usage_bytes", _G, _NONE, _n(cg.memory_max_usage), ts))
    add(("container_memory_working_set_bytes", _G, _NONE, _n(cg.memory_working_set), ts))
    add(("container_memory_rss", _G, _NONE, _n(cg.memory_rss), ts))
    add(("container_memory_cache", _G, _NONE, _n(cg.memory_cache), ts))
    add(("container_memory_mapped_file", _G, _NONE, _n(cg.memory_mapped_file), ts))
    add(("container_memory_kernel_usage", _G, _NONE, _n(cg.memory_kernel), ts))
    add(("container_memory_swap", _G, _NONE, _n(cg.memory_swap), ts))
    add(("container_memory_failcnt", _C, _NONE, _n(cg.memory_failcnt), ts))
    for kind, container, hierarchy in (("pgfault", cg.pgfault, cg.pgfault_hierarchy),
                                       ("pgmajfault", cg.pgmajfault, cg.pgmajfault_hierarchy)):
        add(("container_memory_failures_total", _C, (kind, "container"), _n(container), ts))
        add(("container_memory_failures_total", _C, (kind, "hierarchy"), _n(hierarchy), ts))
    add(("container_oom_events_total", _C, _NONE, _n(cg.oom_kills), ts))
    for dev in cg.io:
        device = dev.name or f"{dev.major}:{dev.minor}"
        add(("container_fs_reads_bytes_total", _C, (device,), dev.read_bytes, ts))
        add(("container_fs_reads_total", _C, (device,), dev.reads, ts))
        add(("container_fs_writes_bytes_total", _C, (device,), dev.write_bytes, ts))
        add(("container_fs_writes_total", _C, (device,), dev.writes, ts))
        for op, value in (("Read", dev.read_bytes), ("Write", dev.write_bytes)):
            labels = (device, str(dev.major), str(dev.minor), op)
            add(("container_blkio_device_usage_total", _C, labels, value, ts))
    add(("container_processes", _G, _NONE, len(cg.pids), ts))
    add(("container_threads", _G, _NONE, _n(cg.threads), ts))
    add(("container_threads_max", _G, _NONE, _n(cg.pids_limit), ts))
    add(("container_file_descriptors", _G, _NONE, _n(cg.file_descriptors), ts))
    add(("container_sockets", _G, _NONE, _n(cg.sockets), ts))
    if psi:
        for resource in ("cpu", "memory", "io"):
            p = cg.psi.get(resource)
            add((f"container_pressure_{resource}_stalled_seconds_total", _C, _NONE,
                 0.0 if p is None else p.full_total_us / 1e6, ts))
            add((f"container_pressure_{resource}_waiting_seconds_total", _C, _NONE,
                 0.0 if p is None else p.some_total_us / 1e6, ts))
    if hugetlb:
        for page in cg.hugetlb:
            add(("container_hugetlb_usage_bytes", _G, (page.page_size,), page.usage, ts))
            add(("container_hugetlb_max_usage_bytes", _G, (page.page_size,), _n(page.max_usage), ts))
    add(("container_start_time_seconds", _G, _NONE, start_s, ts))
    add(("container_last_seen", _G, _NONE, int(time.time()), ts))
    add(("container_spec_cpu_period", _G, _NONE, _n(cg.cpu_period_us), ts))
    if cg.cpu_quota_us is not None:  # as cAdvisor: only a container with a quota has one
        add(("container_spec_cpu_quota", _G, _NONE, cg.cpu_quota_us, ts))
    add(("container_spec_cpu_shares", _G, _NONE, _n(cg.cpu_shares), ts))
    add(("container_spec_memory_limit_bytes", _G, _NONE, _n(cg.memory_limit), ts))
    add(("container_spec_memory_reservation_limit_bytes", _G, _NONE, _n(cg.memory_reservation), ts))
    add(("container_spec_memory_swap_limit_bytes", _G, _NONE, _n(cg.memory_swap_limit), ts))


def container_samples(c: ContainerReading, *, psi: bool, hugetlb: bool) -> list[Sample]:
    """A running container's metrics (an empty list when its cgroup is gone)."""
    if not c.cgroup.exists:
        return []
    out: list[Sample] = []
    started = c.container.started_at or c.container.created_at
    _cgroup_samples(c.cgroup, started / 1e9, psi=psi, hugetlb=hugetlb, out=out)
    fs, dev = c.fs, (c.fs.device,)
    out.append(("container_fs_usage_bytes", _G, dev, fs.used_bytes, fs.timestamp_ns))
    out.append(("container_fs_limit_bytes", _G, dev, _n(fs.capacity_bytes), fs.timestamp_ns))
    out.append(("container_fs_inodes_total", _G, dev, _n(fs.inodes), fs.timestamp_ns))
    out.append(("container_fs_inodes_free", _G, dev, _n(fs.inodes_free), fs.timestamp_ns))
    if c.open_files_limit is not None:
        out.append(("container_ulimits_soft", _G, ("max_open_files",), c.open_files_limit,
                    c.cgroup.timestamp_ns))
    return out


def pod_samples(p: PodReading, *, psi: bool, hugetlb: bool) -> PodSamples:
    """A pod's metrics: its cgroup and interfaces, then each container with a cgroup."""
    pod: list[Sample] = []
    if p.cgroup.exists:
        _cgroup_samples(p.cgroup, p.sandbox.created_at / 1e9, psi=psi, hugetlb=hugetlb, out=pod)
    ts = p.network_timestamp_ns
    for i in p.interfaces:
        labels = (i.name,)
        pod.append(("container_network_receive_bytes_total", _C, labels, i.rx_bytes, ts))
        pod.append(("container_network_receive_packets_total", _C, labels, i.rx_packets, ts))
        pod.append(("container_network_receive_packets_dropped_total", _C, labels, i.rx_dropped, ts))
        pod.append(("container_network_receive_errors_total", _C, labels, i.rx_errors, ts))
        pod.append(("container_network_transmit_bytes_total", _C, labels, i.tx_bytes, ts))
        pod.append(("container_network_transmit_packets_total", _C, labels, i.tx_packets, ts))
        pod.append(("container_network_transmit_packets_dropped_total", _C, labels, i.tx_dropped, ts))
        pod.append(("container_network_transmit_errors_total", _C, labels, i.tx_errors, ts))
    own = Group(id=p.sandbox.id, labels=pod_labels(p), container=POD_CONTAINER_NAME, samples=pod)
    containers = [Group(id=c.container.id, labels=container_labels(c), container=c.container.meta_name,
                        samples=samples)
                  for c in p.containers if (samples := container_samples(c, psi=psi, hugetlb=hugetlb))]
    return PodSamples(pod_id=p.sandbox.id, pod=own, containers=containers)


def descriptor(name: str) -> Descriptor:
    return _BY_NAME[name]


__all__ = ["BASE_LABELS", "COUNTER", "DESCRIPTORS", "GAUGE", "Descriptor", "Group", "PodSamples", "Sample",
           "container_labels", "container_samples", "descriptor", "descriptors", "pod_labels", "pod_samples"]
