"""metricsp and metricdescs: the CRI metrics calls kubelet's CRI stats provider uses instead of cAdvisor.

crictl prints the responses as protojson (its default, `-o json`) or YAML; crib prints the same documents,
and `-o table` adds one line per metric (crictl has no table for them), its labels named after the
descriptors (one ListMetricDescriptors call) so that a reading can be told apart from its neighbours;
cAdvisor's id/name/image labels are left out there (the POD and CONTAINER columns say it).
"""

from __future__ import annotations

from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output
from crib.cli.client import Client
from crib.cli.commands._common import client_of, output_option
from crib.cli.stats import watch_loop

IDENTITY = ("id", "name", "image")  # cAdvisor's labels naming the container: the table has its own columns


def _labels(descriptor: Any, values: Any) -> str:
    keys = list(descriptor.label_keys) if descriptor is not None else []
    pairs = [f"{keys[i] if i < len(keys) else i}={v}" for i, v in enumerate(values)
             if i >= len(keys) or keys[i] not in IDENTITY]
    return ",".join(pairs) or "-"


def _metrics_table(client: Client, pods: Any) -> None:
    descriptors = {d.name: d for d in client.call("ListMetricDescriptors",
                                                  api.ListMetricDescriptorsRequest()).descriptors}
    table = output.Table(["POD", "CONTAINER", "METRIC", "TYPE", "LABELS", "VALUE"])

    def add(pod: str, container: str, metric: Any) -> None:
        table.add([output.truncate_id(pod), output.truncate_id(container) if container else "-", metric.name,
                   api.MetricType.Name(metric.metric_type).lower(),
                   _labels(descriptors.get(metric.name), metric.label_values), metric.value.value])

    for pod in sorted(pods, key=lambda p: p.pod_sandbox_id):
        for metric in pod.metrics:
            add(pod.pod_sandbox_id, "", metric)
        for ctr in sorted(pod.container_metrics, key=lambda c: c.container_id):
            for metric in ctr.metrics:
                add(pod.pod_sandbox_id, ctr.container_id, metric)
    table.print()


@click.command()
@output_option(default="json")
@click.option("-w", "--watch", is_flag=True, help="Print the metrics again every 0.5 s until Ctrl-C.")
@click.pass_context
def metricsp(ctx: click.Context, fmt: str, watch: bool) -> None:
    """List pod and container metrics (CRI ListPodSandboxMetrics: cAdvisor's figures, from the runtime)."""
    client = client_of(ctx)

    def show() -> None:
        resp = client.call("ListPodSandboxMetrics", api.ListPodSandboxMetricsRequest())
        if fmt == "table":
            _metrics_table(client, resp.pod_metrics)
        else:
            output.emit(output.message_dict(resp), fmt)

    watch_loop(show, watch)


@click.command()
@output_option(default="json")
@click.pass_context
def metricdescs(ctx: click.Context, fmt: str) -> None:
    """List the metric descriptors (CRI ListMetricDescriptors): name, help and label keys of each metric."""
    resp = client_of(ctx).call("ListMetricDescriptors", api.ListMetricDescriptorsRequest())
    if fmt != "table":
        output.emit(output.message_dict(resp), fmt)
        return
    table = output.Table(["NAME", "LABELS", "HELP"])
    for d in sorted(resp.descriptors, key=lambda d: d.name):
        table.add([d.name, ",".join(d.label_keys) or "-", d.help])
    table.print()


__all__ = ["metricdescs", "metricsp"]
