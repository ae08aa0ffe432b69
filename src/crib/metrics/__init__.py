"""Metrics: readings of pods and containers (sampler.py), cAdvisor's container_* metrics (cadvisor.py),
crib's own counters (ops.py), and the Prometheus endpoint (prom.py, scrape.py, endpoint.py).

The endpoint modules import prometheus_client and are imported only when `[metrics] address` is set;
nothing imported here does. ops comes first and imports nothing of crib's: the network and image code
count into it, and they are themselves imported while this package loads (sampler -> records -> network).
"""

from crib.metrics import ops
from crib.metrics.sampler import ContainerReading, FsReading, PodReading, Sampler

__all__ = ["ContainerReading", "FsReading", "PodReading", "Sampler", "ops"]
