"""cAdvisor-style samples (metrics/cadvisor.py) -> CRI MetricDescriptor and PodSandboxMetrics."""

from __future__ import annotations

from crib._proto.runtime.v1 import api_pb2 as api
from crib.metrics import PodReading, cadvisor

_TYPE = {cadvisor.COUNTER: api.COUNTER, cadvisor.GAUGE: api.GAUGE}


def descriptors(*, psi: bool, hugetlb: bool) -> list[api.MetricDescriptor]:
    return [api.MetricDescriptor(name=d.name, help=d.help, label_keys=list(d.label_keys))
            for d in cadvisor.descriptors(psi=psi, hugetlb=hugetlb)]


def _metrics(samples: list[cadvisor.Sample]) -> list[api.Metric]:
    # CRI carries values as unsigned integers: seconds are truncated, as CRI-O and containerd do.
    return [api.Metric(name=name, timestamp=ts, metric_type=_TYPE[kind], label_values=labels,
                       value=api.UInt64Value(value=max(0, int(value))))
            for name, kind, labels, value, ts in samples]


def pod_metrics(reading: PodReading, *, psi: bool, hugetlb: bool) -> api.PodSandboxMetrics:
    samples = cadvisor.pod_samples(reading, psi=psi, hugetlb=hugetlb)
    return api.PodSandboxMetrics(
        pod_sandbox_id=samples.pod_id, metrics=_metrics(samples.pod),
        container_metrics=[api.ContainerMetrics(container_id=cid, metrics=_metrics(group))
                           for cid, group in samples.containers])


__all__ = ["descriptors", "pod_metrics"]
