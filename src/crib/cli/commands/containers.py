"""Containers: create, start, stop, rm, ps, inspect, update, run, stats (crictl's flags and output)."""

from __future__ import annotations

import glob
import os
import time
from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output
from crib.cli.client import Client, ClientError
from crib.cli.commands._common import (
    CONTAINER_STATE_WORDS,
    POD_NAME_LABEL,
    POD_NAMESPACE_LABEL,
    apply,
    client_of,
    echo_ids,
    echo_mappings,
    for_each,
    label_option,
    list_containers,
    need_ids,
    output_option,
    parse_labels,
    removal_targets,
    show_statuses,
    status_options,
)
from crib.cli.commands.images import PULL_FLAGS, auth_config, pull_image
from crib.cli.commands.pods import pod_deadline, run_pod
from crib.cli.configs import load_container_config, load_pod_config
from crib.cli.timeparse import parse_duration

_PULL_CHOICE = [
    click.option("--no-pull", is_flag=True, help="Do not pull the image (overrides the config file)."),
    click.option("--with-pull", is_flag=True, help="Pull the image first (overrides the config file)."),
    click.option("-T", "--cancel-timeout", default=None, metavar="DURATION",
                 help="How long to wait for the request before cancelling it."),
    *PULL_FLAGS,
    click.option("-q", "--quiet", is_flag=True, help="No pull progress."),
]

_SELECT = [
    click.option("--name", default="", help="Filter by container name regular expression pattern."),
    click.option("--namespace", default="", help="Filter by pod namespace regular expression pattern."),
    click.option("-p", "--pod", default="", help="Filter by pod id."),
    click.option("--image", default="", help="Filter by container image."),
    click.option("-s", "--state", default="", help="Filter by state: created, running, exited, unknown."),
    label_option(),
    click.option("-l", "--latest", is_flag=True, help="The most recently created container (any state)."),
    click.option("-n", "--last", type=int, default=0, help="The last n created containers (any state)."),
]


def _create(client: Client, pod_id: str, config_path: str, pod_config_path: str, *, with_pull: bool,
            auth: Any, pull_timeout: float | None, quiet: bool, deadline: float) -> str:
    config = load_container_config(config_path)
    pod_config = load_pod_config(pod_config_path) if pod_config_path else None
    if with_pull:
        images = [config.image.image] + [m.image.image for m in config.mounts if m.image.image]
        for ref in images:
            pull_image(client, ref, auth, timeout=pull_timeout, quiet=quiet, sandbox=pod_config)
    request = api.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config)
    return str(client.call("CreateContainer", request, timeout=deadline).container_id)


def _pull_wanted(no_pull: bool, with_pull: bool, default: bool) -> bool:
    if no_pull and with_pull:
        raise click.UsageError("conflict: --no-pull and --with-pull are both set")
    return (default and not no_pull) or with_pull


@click.command()
@click.argument("pod_id", metavar="POD")
@click.argument("config_file", metavar="container-config.[json|yaml]")
@click.argument("pod_config_file", metavar="pod-config.[json|yaml]")
@apply(_PULL_CHOICE)
@click.pass_context
def create(ctx: click.Context, pod_id: str, config_file: str, pod_config_file: str, no_pull: bool,
           with_pull: bool, cancel_timeout: str | None, creds: str | None, auth: str | None,
           username: str | None, pull_timeout: str | None, quiet: bool) -> None:
    """Create a new container in a pod; prints its id."""
    client = client_of(ctx)
    pull = _pull_wanted(no_pull, with_pull, client.settings.pull_image_on_create)
    cid = _create(client, pod_id, config_file, pod_config_file, with_pull=pull,
                  auth=auth_config(creds, auth, username), quiet=quiet,
                  pull_timeout=parse_duration(pull_timeout) if pull_timeout else None,
                  deadline=parse_duration(cancel_timeout) if cancel_timeout else client.timeout)
    click.echo(cid)


def start_container(client: Client, cid: str) -> None:
    client.call("StartContainer", api.StartContainerRequest(container_id=cid), timeout=client.timeout * 2)
    click.echo(cid)


@click.command()
@click.argument("config_file", metavar="container-config.[json|yaml]")
@click.argument("pod_config_file", metavar="pod-config.[json|yaml]")
@apply(_PULL_CHOICE)
@click.option("-r", "--runtime", default="", help="Runtime handler to use (a RuntimeClass handler).")
@click.pass_context
def run(ctx: click.Context, config_file: str, pod_config_file: str, no_pull: bool, with_pull: bool,
        cancel_timeout: str | None, creds: str | None, auth: str | None, username: str | None,
        pull_timeout: str | None, quiet: bool, runtime: str) -> None:
    """Pull the image (with progress), run a pod, create and start the container in it."""
    client = client_of(ctx)
    pull = _pull_wanted(no_pull, with_pull, not client.settings.disable_pull_on_run)
    pod_id = run_pod(client, load_pod_config(pod_config_file), runtime, pod_deadline(cancel_timeout, client))
    cid = _create(client, pod_id, config_file, pod_config_file, with_pull=pull,
                  auth=auth_config(creds, auth, username), quiet=quiet,
                  pull_timeout=parse_duration(pull_timeout) if pull_timeout else None,
                  deadline=parse_duration(cancel_timeout) if cancel_timeout else client.timeout)
    start_container(client, cid)


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="CONTAINER-ID...")
@click.pass_context
def start(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Start one or more created containers."""
    client = client_of(ctx)
    for cid in ids:
        start_container(client, cid)


def _stop(client: Client, cid: str, grace: int) -> None:
    client.call("StopContainer", api.StopContainerRequest(container_id=cid, timeout=grace),
                timeout=client.timeout + grace)
    click.echo(cid)


@click.command()
@click.argument("ids", nargs=-1, metavar="CONTAINER-ID...")
@click.option("-t", "--timeout", "grace", type=int, default=0,
              help="Seconds to wait before killing the container after a graceful stop is requested.")
@click.option("-a", "--all", "all_", is_flag=True, help="Stop all running containers.")
@click.pass_context
def stop(ctx: click.Context, ids: tuple[str, ...], grace: int, all_: bool) -> None:
    """Stop one or more running containers."""
    client = client_of(ctx)
    if all_ and ids:
        raise click.UsageError("cannot specify CONTAINER-ID(s) when using --all")
    targets = [c.id for c in list_containers(client, state="running")] if all_ else list(ids)
    if all_ and not targets:
        click.echo("No running containers found.")
        return
    need_ids(targets, "container")
    for cid in targets:
        _stop(client, cid, grace)


@click.command()
@click.argument("ids", nargs=-1, metavar="CONTAINER-ID...")
@click.option("-f", "--force", is_flag=True, help="Stop the container first if it is running.")
@click.option("-k", "--keep-logs", is_flag=True, help="Keep the container's log file and its rotations.")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all containers.")
@click.pass_context
def rm(ctx: click.Context, ids: tuple[str, ...], force: bool, keep_logs: bool, all_: bool) -> None:
    """Remove one or more containers (and, as crictl does, their log files)."""
    client = client_of(ctx)
    targets = removal_targets(ids, all_, lambda: [c.id for c in list_containers(client, all_=True)],
                              "container")

    def remove(cid: str) -> None:
        status = client.call("ContainerStatus", api.ContainerStatusRequest(container_id=cid)).status
        if status.state == api.CONTAINER_RUNNING:
            if not force:
                raise ClientError(f"container {cid!r} is running, stop it first (or use -f)")
            _stop(client, status.id, 0)
        client.call("RemoveContainer", api.RemoveContainerRequest(container_id=status.id))
        if not keep_logs and status.log_path:
            for path in [*glob.glob(glob.escape(status.log_path) + ".*"), status.log_path]:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    click.echo(f"crib: removing log file {path}: {exc.strerror}", err=True)
        click.echo(cid)

    for_each(targets, remove)


@click.command()
@click.option("-v", "--verbose", is_flag=True, help="Show verbose information for containers.")
@click.option("--id", "cid", default="", help="Filter by container id (a prefix).")
@apply(_SELECT)
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@output_option()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default: running only).")
@click.option("--no-trunc", is_flag=True, help="Show output without truncating the ID.")
@click.option("-r", "--resolve-image-path", is_flag=True, help="Show the image's name instead of its id.")
@click.pass_context
def ps(ctx: click.Context, verbose: bool, cid: str, name: str, namespace: str, pod: str, image: str,
       state: str, labels: tuple[str, ...], latest: bool, last: int, quiet: bool, fmt: str, all_: bool,
       no_trunc: bool, resolve_image_path: bool) -> None:
    """List containers."""
    client = client_of(ctx)
    items = list_containers(client, cid=cid, pod=pod, state=state, all_=all_, labels=parse_labels(labels),
                            name=name, namespace=namespace, image=image, latest=latest, last=last)
    if fmt != "table":
        output.emit(output.message_dict(api.ListContainersResponse(containers=items)), fmt)
        return
    if quiet:
        echo_ids(items)
        return
    if verbose:
        for c in items:
            _verbose_container(c)
        return
    table = output.Table(["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD",
                          "NAMESPACE"])
    now = time.time()
    for c in items:
        image_name = c.image.image
        if resolve_image_path:
            image_name = _repo_image(client, image_name)
        elif not no_trunc and image_name.startswith("sha256:"):
            image_name = output.truncate_id(image_name, "sha256:")
        table.add([c.id if no_trunc else output.truncate_id(c.id), image_name, output.ago(c.created_at, now),
                   CONTAINER_STATE_WORDS.get(c.state, "Unknown"), c.metadata.name, c.metadata.attempt,
                   c.pod_sandbox_id if no_trunc else output.truncate_id(c.pod_sandbox_id),
                   c.labels.get(POD_NAME_LABEL, "unknown"), c.labels.get(POD_NAMESPACE_LABEL, "unknown")])
    table.print()


def _repo_image(client: Client, ref: str) -> str:
    resp = client.call("ImageStatus", api.ImageStatusRequest(image=api.ImageSpec(image=ref)), image=True)
    return str(resp.image.repo_tags[0]) if resp.image.repo_tags else ref


def _verbose_container(c: Any) -> None:
    click.echo(f"ID: {c.id}\nPodID: {c.pod_sandbox_id}")
    click.echo(f"Namespace: {c.labels.get(POD_NAMESPACE_LABEL, 'unknown')}")
    if c.metadata.name:
        click.echo(f"Name: {c.metadata.name}")
    click.echo(f"Attempt: {c.metadata.attempt}\nState: {CONTAINER_STATE_WORDS.get(c.state, 'Unknown')}")
    click.echo(f"Image: {c.image.image}\nCreated: {output.ago(c.created_at)}")
    echo_mappings(c)
    click.echo()


def container_status_doc(resp: Any) -> dict[str, Any]:
    """crictl's inspect document: protojson with createdAt/startedAt/finishedAt as RFC 3339 times."""
    s = resp.status
    status = output.message_dict(s)
    status["createdAt"] = output.rfc3339nano(s.created_at)
    status["startedAt"] = output.rfc3339nano(s.started_at) if s.state != api.CONTAINER_CREATED \
        else output.GO_ZERO_TIME
    finished = s.state == api.CONTAINER_EXITED or (s.state == api.CONTAINER_UNKNOWN and s.finished_at > 0)
    status["finishedAt"] = output.rfc3339nano(s.finished_at) if finished else output.GO_ZERO_TIME
    return output.status_doc(status, resp.info)


@click.command()
@click.argument("ids", nargs=-1, metavar="[CONTAINER-ID...]")
@status_options()
@apply(_SELECT)
@click.option("-a", "--all", "all_", is_flag=True, help="Match containers in every state.")
@click.pass_context
def inspect(ctx: click.Context, ids: tuple[str, ...], fmt: str, quiet: bool, template: str, name: str,
            namespace: str, pod: str, image: str, state: str, labels: tuple[str, ...], latest: bool,
            last: int, all_: bool) -> None:
    """Display the status of one or more containers (all matching the filters when no id is given)."""
    client = client_of(ctx)
    targets = list(ids) or [c.id for c in list_containers(
        client, pod=pod, state=state, all_=all_, labels=parse_labels(labels), name=name,
        namespace=namespace, image=image, latest=latest, last=last)]
    need_ids(targets, "container")
    show_statuses(targets, lambda cid: client.call("ContainerStatus", api.ContainerStatusRequest(
        container_id=cid, verbose=not quiet)), lambda resp: _status_table(resp, not quiet),
        container_status_doc, fmt, template)


def _status_table(resp: Any, verbose: bool) -> None:
    s = resp.status
    click.echo(f"ID: {s.id}")
    if s.metadata.name:
        click.echo(f"Name: {s.metadata.name}")
    if s.metadata.attempt:
        click.echo(f"Attempt: {s.metadata.attempt}")
    click.echo(f"State: {api.ContainerState.Name(s.state)}\nCreated: {output.ago(s.created_at)}")
    if s.state != api.CONTAINER_CREATED:
        click.echo(f"Started: {output.ago(s.started_at)}")
    if s.state == api.CONTAINER_EXITED:
        if s.finished_at:
            click.echo(f"Finished: {output.ago(s.finished_at)}")
        click.echo(f"Exit Code: {s.exit_code}")
    echo_mappings(s)
    if verbose:
        click.echo(f"Info: {dict(resp.info)}")


@click.command()
@click.argument("ids", nargs=-1, required=True, metavar="CONTAINER-ID...")
@click.option("--cpu-period", type=int, default=0, help="CPU CFS period (usecs); 0: the system's.")
@click.option("--cpu-quota", type=int, default=0, help="CPU CFS quota (usecs per period).")
@click.option("--cpu-share", type=int, default=0, help="CPU shares (relative weight).")
@click.option("--memory", type=int, default=0, help="Memory limit (bytes).")
@click.option("--cpuset-cpus", default="", help="CPUs to use (0-3, 0,1).")
@click.option("--cpuset-mems", default="", help="Memory nodes to use.")
@click.option("--oom-score-adj", type=int, default=0, help="OOM killer score adjustment.")
@click.option("--cpu-count", type=int, default=0, hidden=True, help="Windows only; ignored.")
@click.option("--cpu-maximum", type=int, default=0, hidden=True, help="Windows only; ignored.")
@click.pass_context
def update(ctx: click.Context, ids: tuple[str, ...], cpu_period: int, cpu_quota: int, cpu_share: int,
           memory: int, cpuset_cpus: str, cpuset_mems: str, oom_score_adj: int, cpu_count: int,
           cpu_maximum: int) -> None:
    """Update the resources of one or more running containers."""
    client = client_of(ctx)
    linux = api.LinuxContainerResources(cpu_period=cpu_period, cpu_quota=cpu_quota, cpu_shares=cpu_share,
                                        memory_limit_in_bytes=memory, cpuset_cpus=cpuset_cpus,
                                        cpuset_mems=cpuset_mems, oom_score_adj=oom_score_adj)
    for cid in ids:
        client.call("UpdateContainerResources",
                    api.UpdateContainerResourcesRequest(container_id=cid, linux=linux))
        click.echo(cid)


@click.command()
@click.argument("container_id", required=False, default="", metavar="[ID]")
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default: running ones).")
@click.option("--id", "cid", default="", help="Filter by container id.")
@click.option("-p", "--pod", default="", help="Filter by pod id.")
@label_option()
@output_option(default="table")
@click.option("-s", "--seconds", type=int, default=1, show_default=True,
              help="Sample duration for CPU usage in seconds.")
@click.option("-w", "--watch", is_flag=True, help="Watch container resources.")
@click.pass_context
def stats(ctx: click.Context, container_id: str, all_: bool, cid: str, pod: str, labels: tuple[str, ...],
          fmt: str, seconds: int, watch: bool) -> None:
    """List containers' resource usage (CRI ListContainerStats): CPU %, memory, disk, inodes, swap."""
    from crib.cli.stats import cpu_percent, sampled_table, watch_loop

    client = client_of(ctx)
    request = api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(
        id=cid or container_id, pod_sandbox_id=pod, label_selector=parse_labels(labels)))

    def row(before: Any, s: Any) -> list[Any] | None:
        cpu, mem = s.cpu.usage_core_nano_seconds.value, s.memory.working_set_bytes.value
        if not all_ and cpu == 0 and mem == 0:
            return None  # not running
        return [output.truncate_id(s.attributes.id), s.attributes.metadata.name,
                f"{cpu_percent(before.cpu, s.cpu):.2f}", output.human_size(mem),
                output.human_size(s.writable_layer.used_bytes.value), s.writable_layer.inodes_used.value,
                output.human_size(s.swap.swap_usage_bytes.value)]

    watch_loop(lambda: sampled_table(
        lambda: client.call("ListContainerStats", request).stats,
        lambda items: api.ListContainerStatsResponse(stats=items), fmt=fmt, seconds=seconds,
        header=["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES", "SWAP"], row=row), watch)


__all__ = ["container_status_doc", "create", "inspect", "ps", "rm", "run", "start", "stats", "stop", "update"]
