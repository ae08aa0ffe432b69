"""The runtime itself: version, info, runtime-config, update-runtime-config."""

from __future__ import annotations

from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output
from crib.cli.commands._common import client_of, output_option, template_option


@click.command()
@click.pass_context
def version(ctx: click.Context) -> None:
    """Show the runtime's name and versions (the CRI Version call)."""
    resp = client_of(ctx).call("Version", api.VersionRequest(version="v1"))
    click.echo(f"Version:  {resp.version}")
    click.echo(f"RuntimeName:  {resp.runtime_name}")
    click.echo(f"RuntimeVersion:  {resp.runtime_version}")
    click.echo(f"RuntimeApiVersion:  {resp.runtime_api_version}")


def info_doc(resp: Any) -> dict[str, Any]:
    """crictl's info document: status (protojson), runtimeHandlers and features (Go JSON), info keys."""
    doc: dict[str, Any] = {"status": output.message_dict(resp.status)}
    if resp.runtime_handlers:
        doc["runtimeHandlers"] = [output.plain_dict(h) for h in resp.runtime_handlers]
    doc["features"] = output.plain_dict(resp.features)
    for key in sorted(resp.info):
        doc[key] = output.info_value(resp.info[key])
    return doc


@click.command()
@output_option(default="json", choices=("json", "yaml", "go-template"))
@click.option("-q", "--quiet", is_flag=True, help="Only the status, without the runtime's verbose info.")
@template_option()
@click.pass_context
def info(ctx: click.Context, fmt: str, quiet: bool, template: str) -> None:
    """Show the runtime's conditions, handlers, features and (verbose) info."""
    resp = client_of(ctx).call("Status", api.StatusRequest(verbose=not quiet))
    output.emit(info_doc(resp), fmt, template)


@click.command("runtime-config")
@click.pass_context
def runtime_config(ctx: click.Context) -> None:
    """Show the runtime's configuration as kubelet reads it (CRI RuntimeConfig: the cgroup driver)."""
    resp = client_of(ctx).call("RuntimeConfig", api.RuntimeConfigRequest())
    if resp.HasField("linux"):
        table = output.Table(min_width=10)
        table.add(["cgroup driver:", api.CgroupDriver.Name(resp.linux.cgroup_driver)])
        table.print()


@click.command("update-runtime-config")
@click.option("-p", "--pod-cidr", default=None, help="The pod CIDR to hand addresses out from.")
@click.pass_context
def update_runtime_config(ctx: click.Context, pod_cidr: str | None) -> None:
    """Tell the runtime the node's pod CIDR, as kubelet does (CRI UpdateRuntimeConfig)."""
    if pod_cidr is None:
        raise click.UsageError("nothing to update: give --pod-cidr")
    config = api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr=pod_cidr))
    client_of(ctx).call("UpdateRuntimeConfig", api.UpdateRuntimeConfigRequest(runtime_config=config))
    click.echo("Runtime config successfully updated", err=True)


__all__ = ["info", "info_doc", "runtime_config", "update_runtime_config", "version"]
