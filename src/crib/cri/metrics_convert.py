"""cAdvisor-style samples (metrics/cadvisor.py) -> CRI MetricDescriptor and PodSandboxMetrics.

A node with 100 containers has ~5500 metrics per ListPodSandboxMetrics. Building a protobuf message per
metric is most of the call's cost, so PodSandboxMetrics are written as wire bytes directly (cri/wire.py):
a metric's name, type and label-value fields are the same bytes every time and are cached, a group's base
label values (id, name, image) are encoded once per pod or container, and only the value is encoded per
sample. The bytes parse to exactly the messages protobuf would build (test_metrics checks it).

    Metric           1 name, 2 timestamp, 3 metric_type, 4 label_values (repeated), 5 value (UInt64Value: 1)
    ContainerMetrics 1 container_id, 2 metrics
    PodSandboxMetrics 1 pod_sandbox_id, 2 metrics, 3 container_metrics
"""

from __future__ import annotations

import functools

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cri import wire
from crib.metrics import PodReading, cadvisor

_TYPE = {cadvisor.COUNTER: api.COUNTER, cadvisor.GAUGE: api.GAUGE}


def descriptors(*, psi: bool, hugetlb: bool) -> list[api.MetricDescriptor]:
    return [api.MetricDescriptor(name=d.name, help=d.help, label_keys=list(d.label_keys))
            for d in cadvisor.descriptors(psi=psi, hugetlb=hugetlb)]


@functools.lru_cache(maxsize=512)
def _name(name: str) -> bytes:
    return wire.field(1, name.encode())


_VALUE = wire.varint(5 << 3 | 2)
_ZERO_VALUE = wire.field(5, b"")
_ONE_BYTE = [bytes((n,)) for n in range(16)]
# Field 3; COUNTER = 0 is proto3's default and is left out, as protobuf does.
_KIND = {kind: wire.integer(3, value) if value else b"" for kind, value in _TYPE.items()}


@functools.lru_cache(maxsize=4096)
def _label(value: str) -> bytes:
    return wire.field(4, value.encode())


def _labels(values: tuple[str, ...]) -> bytes:
    return b"".join([_label(v) for v in values])


def _group(samples: list[cadvisor.Sample], base: bytes) -> list[bytes]:
    out = []
    stamps: dict[int, bytes] = {}
    for name, kind, extra, value, ts in samples:
        stamp = stamps.get(ts)
        if stamp is None:
            stamp = stamps[ts] = wire.integer(2, ts)
        number = int(value)  # CRI carries integers: seconds truncated, as CRI-O and containerd do
        if number > 0:  # field 5, a UInt64Value {1: number}; at most 11 bytes, so a one-byte length
            encoded = wire.varint(number)
            value_field = _VALUE + _ONE_BYTE[len(encoded) + 1] + b"\x08" + encoded
        else:
            value_field = _ZERO_VALUE
        labels = base + _labels(extra) if extra else base
        out.append(_name(name) + stamp + _KIND[kind] + labels + value_field)
    return out


def pod_metrics(reading: PodReading, *, psi: bool, hugetlb: bool) -> bytes:
    """One serialized PodSandboxMetrics."""
    samples = cadvisor.pod_samples(reading, psi=psi, hugetlb=hugetlb)
    own = samples.pod
    out = wire.field(1, samples.pod_id.encode()) + wire.repeated(2, _group(own.samples, _labels(own.labels)))
    containers = [wire.field(1, g.id.encode()) + wire.repeated(2, _group(g.samples, _labels(g.labels)))
                  for g in samples.containers]
    return out + wire.repeated(3, containers)


def list_response(pods: list[bytes]) -> bytes:
    """ListPodSandboxMetricsResponse (and StreamPodSandboxMetricsResponse: both hold field 1)."""
    return wire.repeated(1, pods)


__all__ = ["descriptors", "list_response", "pod_metrics"]
