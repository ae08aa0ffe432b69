"""`crib logs`: a container's log, read from its file as crictl reads it (the runtime only says where)."""

from __future__ import annotations

import sys

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import crilog
from crib.cli.client import ClientError
from crib.cli.commands._common import client_of
from crib.cli.timeparse import parse_since


@click.command()
@click.argument("container_id", metavar="CONTAINER-ID")
@click.option("-f", "--follow", is_flag=True, help="Follow log output until the container stops.")
@click.option("-p", "--previous", is_flag=True, help="The log of the previous instance of the container.")
@click.option("-r", "--reopen", is_flag=True, help="Ask the runtime to reopen the log file first.")
@click.option("--tail", type=int, default=-1, help="Number of lines to show from the end (default: all).")
@click.option("--limit-bytes", type=int, default=-1, help="Maximum bytes of log to show (default: all).")
@click.option("--since", default="", help="Since a time (2013-01-02T13:23:37Z), a duration back (42m) or a "
                                          "Unix timestamp.")
@click.option("-t", "--timestamps", is_flag=True, help="Show each line's timestamp.")
@click.option("-s", "--stream", type=click.Choice(["stdout", "stderr"]), default=None,
              help="Only this stream (default: both).")
@click.pass_context
def logs(ctx: click.Context, container_id: str, follow: bool, previous: bool, reopen: bool, tail: int,
         limit_bytes: int, since: str, timestamps: bool, stream: str | None) -> None:
    """Fetch the logs of a container (stdout records to stdout, stderr records to stderr)."""
    if tail >= 0 and stream is not None:
        raise click.UsageError("--tail and --stream are mutually exclusive")
    client = client_of(ctx)
    if reopen:
        client.call("ReopenContainerLog", api.ReopenContainerLogRequest(container_id=container_id))
        click.echo("Container logs reopened", err=True)
    status = client.call("ContainerStatus", api.ContainerStatusRequest(container_id=container_id)).status
    path = status.log_path
    if not path:
        raise ClientError(f"container {container_id} has no log path (its config set no log_path)")
    if previous:
        if status.metadata.attempt == 0:
            raise ClientError(f"previous terminated container {status.metadata.name} not found")
        path = crilog.previous_path(path, status.metadata.attempt)
    opts = crilog.Options(follow=follow, since=parse_since(since) if since else None, tail=tail,
                          limit_bytes=limit_bytes, timestamps=timestamps,
                          streams=(stream,) if stream else ("stdout", "stderr"))

    def write(name: str, data: bytes) -> None:
        out = sys.stdout.buffer if name == "stdout" else sys.stderr.buffer
        out.write(data)
        if follow:
            out.flush()

    def running() -> bool:
        try:
            st = client.call("ContainerStatus", api.ContainerStatusRequest(container_id=status.id)).status
        except ClientError:
            return False
        return bool(st.state == api.CONTAINER_RUNNING)

    try:
        crilog.read(path, opts, write, running)
    except FileNotFoundError:
        raise ClientError(f"no log file at {path} (is this client on the container's node?)") from None
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()


__all__ = ["logs"]
