"""Pods: runp, stopp, rmp, pods, inspectp, statsp (crictl's flags and output)."""

from __future__ import annotations

import time
from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output
from crib.cli.client import Client, ClientError
from crib.cli.commands._common import (
    POD_STATE_WORDS,
    apply,
    client_of,
    echo_ids,
    echo_mappings,
    for_each,
    label_option,
    list_pods,
    need_ids,
    output_option,
    parse_labels,
    removal_targets,
    show_statuses,
    status_options,
)
from crib.cli.configs import load_pod_config
from crib.cli.timeparse import parse_duration

_FILTERS = [
    click.option("--name", default="", help="Filter by pod name regular expression pattern."),
    click.option("--namespace", default="", help="Filter by pod namespace regular expression pattern."),
    click.option("-s", "--state", default="", help="Filter by pod state (ready, notready)."),
    label_option(),
    click.option("-l", "--latest", is_flag=True, help="Show the most recently created pod."),
    click.option("-n", "--last", type=int, default=0, help="Show last n recently created pods (0: all)."),
]


def pod_deadline(value: str | None, client: Client, factor: float = 2.0) -> float:
    """-T/--cancel-timeout, else the client's timeout times factor (cri-client doubles it for pods)."""
    return parse_duration(value) if value else client.timeout * factor


def run_pod(client: Client, config: Any, handler: str, timeout: float) -> str:
    resp = client.call("RunPodSandbox", api.RunPodSandboxRequest(config=config, runtime_handler=handler),
                       timeout=timeout)
    return str(resp.pod_sandbox_id)


@click.command()
@click.argument("config_file", metavar="pod-config.[json|yaml]")
@click.option("-r", "--runtime", default="", help="Runtime handler to use (a RuntimeClass handler).")
@click.option("-T", "--cancel-timeout", default=None, metavar="DURATION",
              help="How long to wait for the pod before cancelling [default: twice --timeout].")
@click.pass_context
def runp(ctx: click.Context, config_file: str, runtime: str, cancel_timeout: str | None) -> None:
    """Run a new pod from a pod config (JSON or YAML); prints its id."""
    config = load_pod_config(config_file)
    client = client_of(ctx)
    click.echo(run_pod(client, config, runtime, pod_deadline(cancel_timeout, client)))


def stop_pod(client: Client, pod_id: str) -> None:
    client.call("StopPodSandbox", api.StopPodSandboxRequest(pod_sandbox_id=pod_id),
                timeout=client.timeout * 2)
    click.echo(f"Stopped sandbox {pod_id}")


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="POD-ID...")
@click.pass_context
def stopp(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Stop one or more running pods."""
    client = client_of(ctx)
    for pod_id in ids:
        stop_pod(client, pod_id)


@click.command()
@click.argument("ids", nargs=-1, metavar="[POD-ID...]")
@click.option("-f", "--force", is_flag=True, help="Stop the pod first if it is ready.")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all pods.")
@click.pass_context
def rmp(ctx: click.Context, ids: tuple[str, ...], force: bool, all_: bool) -> None:
    """Remove one or more pods."""
    client = client_of(ctx)
    targets = removal_targets(ids, all_, lambda: [p.id for p in client.call(
        "ListPodSandbox", api.ListPodSandboxRequest()).items], "pod")

    def remove(pod_id: str) -> None:
        status = client.call("PodSandboxStatus", api.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
        if status.state == api.SANDBOX_READY:
            if not force:
                raise ClientError(f"pod sandbox {pod_id!r} is ready, stop it first (or use -f)")
            stop_pod(client, status.id)
        client.call("RemovePodSandbox", api.RemovePodSandboxRequest(pod_sandbox_id=status.id),
                    timeout=client.timeout * 2)
        click.echo(f"Removed sandbox {pod_id}")

    for_each(targets, remove)


@click.command()
@click.option("--id", "pid", default="", help="Filter by pod id (a prefix).")
@apply(_FILTERS)
@click.option("-v", "--verbose", is_flag=True, help="Show verbose info for pods.")
@click.option("-q", "--quiet", is_flag=True, help="List only pod IDs.")
@output_option()
@click.option("--no-trunc", is_flag=True, help="Show output without truncating the ID.")
@click.pass_context
def pods(ctx: click.Context, pid: str, name: str, namespace: str, state: str, labels: tuple[str, ...],
         latest: bool, last: int, verbose: bool, quiet: bool, fmt: str, no_trunc: bool) -> None:
    """List pods."""
    items = list_pods(client_of(ctx), pid=pid, state=state, labels=parse_labels(labels), name=name,
                      namespace=namespace, latest=latest, last=last)
    if fmt != "table":
        output.emit(output.message_dict(api.ListPodSandboxResponse(items=items)), fmt)
        return
    if quiet:
        echo_ids(items)
        return
    if verbose:
        for p in items:
            _verbose_pod(p)
        return
    table = output.Table(["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"])
    now = time.time()
    for p in items:
        table.add([p.id if no_trunc else output.truncate_id(p.id), output.ago(p.created_at, now),
                   POD_STATE_WORDS.get(p.state, "Unknown"), p.metadata.name, p.metadata.namespace,
                   p.metadata.attempt, p.runtime_handler or "(default)"])
    table.print()


def _verbose_pod(p: Any) -> None:
    click.echo(f"ID: {p.id}")
    for label, value in (("Name", p.metadata.name), ("UID", p.metadata.uid),
                         ("Namespace", p.metadata.namespace)):
        if value:
            click.echo(f"{label}: {value}")
    if p.metadata.attempt:
        click.echo(f"Attempt: {p.metadata.attempt}")
    click.echo(f"Status: {POD_STATE_WORDS.get(p.state, 'Unknown')}")
    click.echo(f"Created: {output.rfc3339nano(p.created_at)}")
    echo_mappings(p)
    click.echo(f"Runtime: {p.runtime_handler or '(default)'}\n")


def pod_status_doc(resp: Any) -> dict[str, Any]:
    status = output.message_dict(resp.status)
    status["createdAt"] = output.rfc3339nano(resp.status.created_at)
    return output.status_doc(status, resp.info)


@click.command()
@click.argument("ids", nargs=-1, metavar="[POD-ID...]")
@status_options()
@apply(_FILTERS)
@click.pass_context
def inspectp(ctx: click.Context, ids: tuple[str, ...], fmt: str, quiet: bool, template: str, name: str,
             namespace: str, state: str, labels: tuple[str, ...], latest: bool, last: int) -> None:
    """Display the status of one or more pods (all matching the filters when no id is given)."""
    client = client_of(ctx)
    targets = list(ids) or [p.id for p in list_pods(
        client, state=state, labels=parse_labels(labels), name=name, namespace=namespace, latest=latest,
        last=last)]
    need_ids(targets, "pod")
    show_statuses(targets, lambda pod_id: client.call("PodSandboxStatus", api.PodSandboxStatusRequest(
        pod_sandbox_id=pod_id, verbose=not quiet)), lambda resp: _pod_status_table(resp, not quiet),
        pod_status_doc, fmt, template)


def _pod_status_table(resp: Any, verbose: bool) -> None:
    s = resp.status
    click.echo(f"ID: {s.id}")
    meta = s.metadata
    for label, value in (("Name", meta.name), ("UID", meta.uid), ("Namespace", meta.namespace)):
        if value:
            click.echo(f"{label}: {value}")
    click.echo(f"Attempt: {s.metadata.attempt}")
    click.echo(f"Status: {api.PodSandboxState.Name(s.state)}")
    click.echo(f"Created: {output.rfc3339nano(s.created_at)}")
    if s.HasField("network"):
        click.echo(f"IP Addresses: {s.network.ip}")
        for extra in s.network.additional_ips:
            click.echo(f"Additional IP: {extra.ip}")
    echo_mappings(s)
    if verbose:
        click.echo(f"Info: {dict(resp.info)}")


@click.command()
@click.argument("pod_id", required=False, default="", metavar="[ID]")
@click.option("--id", "pid", default="", help="Filter by pod id.")
@label_option()
@output_option(default="table")
@click.option("-s", "--seconds", type=int, default=1, show_default=True,
              help="Sample duration for CPU usage in seconds.")
@click.option("-w", "--watch", is_flag=True, help="Watch pod resources.")
@click.pass_context
def statsp(ctx: click.Context, pod_id: str, pid: str, labels: tuple[str, ...], fmt: str, seconds: int,
           watch: bool) -> None:
    """List pod statistics (CRI ListPodSandboxStats): CPU % over a sample, memory working set."""
    from crib.cli.stats import cpu_percent, sampled_table, watch_loop

    client = client_of(ctx)
    request = api.ListPodSandboxStatsRequest(filter=api.PodSandboxStatsFilter(
        id=pid or pod_id, label_selector=parse_labels(labels)))

    def row(before: Any, s: Any) -> list[Any] | None:
        cpu, mem = s.linux.cpu, s.linux.memory
        if not cpu.usage_core_nano_seconds.value and not mem.working_set_bytes.value:
            return None  # no figures (not running)
        return [s.attributes.metadata.name, output.truncate_id(s.attributes.id),
                f"{cpu_percent(before.linux.cpu, cpu):.2f}", output.human_size(mem.working_set_bytes.value)]

    watch_loop(lambda: sampled_table(
        lambda: client.call("ListPodSandboxStats", request).stats,
        lambda items: api.ListPodSandboxStatsResponse(stats=items), fmt=fmt, seconds=seconds,
        header=["POD", "POD ID", "CPU %", "MEM"], row=row), watch)


__all__ = ["inspectp", "pod_deadline", "pods", "rmp", "run_pod", "runp", "statsp", "stopp"]
