"""crib's Prometheus families, rendered with prometheus-client at scrape time.

Imported only when `[metrics] address` is set (prometheus_client costs memory the idle daemon does not
spend otherwise). Nothing here is on an RPC's path: the interceptor and the services count into plain
counters (ops.py) and the scrape turns a copy of them, the pod and container records and one reading of
the node (sampler.py, shared with stats) into families:

    crib_operations_total{operation, code}           crib_operation_duration_seconds{operation} (histogram)
    crib_pods{state}, crib_containers{state}         crib_image_pulls_total{outcome}
    crib_image_pull_bytes_total                      crib_cni_operation_duration_seconds{operation, network}
    crib_streaming_sessions{kind}                    crib_restarts_restored_total
    process_* (prometheus-client's process collector)
    container_* (cAdvisor's names, cadvisor.py), labelled as kubelet labels them: id, name, image, the
        metric's own keys, then namespace, pod, container

A counter whose cAdvisor name has no _total suffix (container_memory_failcnt) is exposed untyped under that
name: the text format would otherwise rename it. The container_* families are written as text directly
(container_text): prometheus-client's objects cost too much at thousands of samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest

from crib.metrics import cadvisor
from crib.metrics.ops import BUCKETS, Histogram, Snapshot
from crib.metrics.sampler import PodReading

_GROUP_KEYS = (*cadvisor.BASE_LABELS, "namespace", "pod", "container")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeView:
    """Everything one scrape shows, gathered on the event loop (records) and a worker thread (readings)."""

    ops: Snapshot
    pods: dict[str, int]  # state -> count
    containers: dict[str, int]
    sessions: dict[str, int]  # streaming kind -> live sessions
    readings: list[PodReading] = field(default_factory=list)
    psi: bool = False
    hugetlb: bool = False


def _code_name(code: object) -> str:
    return str(getattr(code, "name", code))


def _buckets(hist: Histogram) -> tuple[list[tuple[str, float]], float]:
    out, running = [], 0
    for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
    return out, hist.total


def crib_families(view: NodeView) -> Iterator[Metric]:
    calls = CounterMetricFamily("crib_operations_total", "CRI calls served, by RPC and gRPC status code.",
                                labels=["operation", "code"])
    for operation, codes in sorted(view.ops.calls.items()):
        for code, count in codes.items():
            calls.add_metric([operation, _code_name(code)], count)
    yield calls
    durations = HistogramMetricFamily("crib_operation_duration_seconds", "Time to serve a CRI call, by RPC.",
                                      labels=["operation"])
    for operation, hist in sorted(view.ops.durations.items()):
        buckets, total = _buckets(hist)
        durations.add_metric([operation], buckets, total)
    yield durations
    for name, doc, counts in (("crib_pods", "Pod sandboxes by state.", view.pods),
                              ("crib_containers", "Containers by state.", view.containers)):
        gauge = GaugeMetricFamily(name, doc, labels=["state"])
        for state, count in sorted(counts.items()):
            gauge.add_metric([state], count)
        yield gauge
    pulls = CounterMetricFamily("crib_image_pulls_total",
                                "Image pulls by outcome (success, failure, cancelled).", labels=["outcome"])
    for outcome, count in sorted(view.ops.image_pulls.items()):
        pulls.add_metric([outcome], count)
    yield pulls
    yield CounterMetricFamily("crib_image_pull_bytes_total", "Bytes of image blobs fetched from registries.",
                              value=view.ops.image_pull_bytes)
    cni = HistogramMetricFamily("crib_cni_operation_duration_seconds",
                                "Time of a CNI operation on a network (every plugin of its chain).",
                                labels=["operation", "network"])
    for (operation, network), hist in sorted(view.ops.cni.items()):
        buckets, total = _buckets(hist)
        cni.add_metric([operation, network], buckets, total)
    yield cni
    sessions = GaugeMetricFamily("crib_streaming_sessions", "Live exec, attach and port-forward sessions.",
                                 labels=["kind"])
    for kind, count in sorted(view.sessions.items()):
        sessions.add_metric([kind], count)
    yield sessions
    yield CounterMetricFamily("crib_restarts_restored_total",
                              "Pods and containers found and taken over again when the daemon started.",
                              value=view.ops.restored)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def container_text(view: NodeView) -> str:
    """cAdvisor's container_* families of the node's reading, in the text format.

    Written directly rather than through prometheus-client's Metric objects: with 100 containers that is
    ~6000 samples, and the library's per-label validation and escaping made a scrape ~4 times slower. A
    group's (pod's or container's) labels are escaped once and shared by its samples.
    """
    descs = cadvisor.descriptors(psi=view.psi, hugetlb=view.hugetlb)
    lines: dict[str, list[str]] = {d.name: [] for d in descs}
    extra_keys = {d.name: d.labels for d in descs}
    for reading in view.readings:
        meta = reading.sandbox.meta
        samples = cadvisor.pod_samples(reading, psi=view.psi, hugetlb=view.hugetlb)
        for group in (samples.pod, *samples.containers):
            values = (*group.labels, meta.namespace, meta.name, group.container)
            base = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(_GROUP_KEYS, values, strict=True))
            for name, _kind, extra, value, _ts in group.samples:
                labels = base
                if extra:
                    labels += "," + ",".join(f'{k}="{_escape(v)}"'
                                             for k, v in zip(extra_keys[name], extra, strict=True))
                lines[name].append(f"{name}{{{labels}}} {_number(value)}\n")
    out: list[str] = []
    for d in descs:
        if not lines[d.name]:
            continue  # no running pod or container (or container_metrics off): no family
        kind = "gauge" if d.kind == cadvisor.GAUGE else "counter" if d.name.endswith("_total") else "untyped"
        out.append(f"# HELP {d.name} {d.help}\n# TYPE {d.name} {kind}\n")
        out.extend(lines[d.name])
    return "".join(out)


class _Collector:
    """Hands prometheus-client crib's families of the view set by render()."""

    def __init__(self) -> None:
        self.view: NodeView | None = None

    def collect(self) -> Iterator[Metric]:
        if self.view is not None:
            yield from crib_families(self.view)


class Exposition:
    """A registry with crib's families and the process collector; render() one scrape at a time."""

    # generate_latest writes the classic text format (legacy names, underscore escaping); say so, rather than
    # the library's newer default, so that every Prometheus version parses it without negotiation.
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _Collector()
        self.registry.register(self._collector)
        ProcessCollector(registry=self.registry)

    def render(self, view: NodeView) -> bytes:
        """The text exposition of view; the caller serializes renders (one collector, one view)."""
        self._collector.view = view
        try:
            return generate_latest(self.registry) + container_text(view).encode()
        finally:
            self._collector.view = None


__all__ = ["Exposition", "NodeView", "container_text", "crib_families"]
