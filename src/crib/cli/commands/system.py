"""`crib version` and `crib info`: who the runtime is and whether it is ready."""

from __future__ import annotations

from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output


@click.command()
@click.pass_obj
def version(state: Any) -> None:
    """Show the runtime's name and versions (the CRI Version call)."""
    client = state.client()
    resp = client.call(client.runtime.Version, api.VersionRequest(version="v1"))
    click.echo(f"Version:  {resp.version}")
    click.echo(f"RuntimeName:  {resp.runtime_name}")
    click.echo(f"RuntimeVersion:  {resp.runtime_version}")
    click.echo(f"RuntimeApiVersion:  {resp.runtime_api_version}")


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Only the status, without the runtime's verbose info.")
@click.pass_obj
def info(state: Any, quiet: bool) -> None:
    """Show the runtime's conditions, handlers, features and (verbose) info as JSON."""
    client = state.client()
    resp = client.call(client.runtime.Status, api.StatusRequest(verbose=not quiet))
    doc: dict[str, Any] = {"status": output.message_dict(resp.status)}
    doc["runtimeHandlers"] = [output.message_dict(h) for h in resp.runtime_handlers]
    doc["features"] = output.message_dict(resp.features)
    for key in sorted(resp.info):
        doc[key] = output.info_value(resp.info[key])
    click.echo(output.dumps(doc))


def register(group: click.Group) -> None:
    group.add_command(version)
    group.add_command(info)


__all__ = ["register"]
