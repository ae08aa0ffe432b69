"""`crib events`: follow the runtime's container events (CRI GetContainerEvents) until Ctrl-C.

`-o json` (the default, as in crictl) prints one JSON object per event on one line, so `jq` and
line-oriented tools read the stream as it comes; `-o yaml` prints one document per event; `-o table`
one readable line per event.
"""

from __future__ import annotations

import json
import sys

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output
from crib.cli.commands._common import client_of, template_option

_KIND = {api.CONTAINER_CREATED_EVENT: "created", api.CONTAINER_STARTED_EVENT: "started",
         api.CONTAINER_STOPPED_EVENT: "stopped", api.CONTAINER_DELETED_EVENT: "deleted"}


@click.command()
@click.option("-o", "--output", "fmt", type=click.Choice(["json", "yaml", "go-template", "table"]),
              default="json", show_default=True, help="Output format.")
@template_option()
@click.pass_context
def events(ctx: click.Context, fmt: str, template: str) -> None:
    """Stream the events of containers, one per line (or per YAML document), until interrupted."""
    if template and fmt != "go-template":
        raise click.UsageError(f"--template can't be used with {fmt!r} format")
    try:
        for event in client_of(ctx).stream("GetContainerEvents", api.GetEventsRequest()):
            doc = output.message_dict(event)
            if fmt == "json":
                sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
            elif fmt == "yaml":
                sys.stdout.write("---\n" + output.to_yaml(doc))
            elif fmt == "go-template":
                sys.stdout.write(output.render_template(template, doc) + "\n")
            else:
                pod = event.pod_sandbox_status
                name = next((s.metadata.name for s in event.containers_statuses
                             if s.id == event.container_id), "")
                sys.stdout.write(f"{output.rfc3339nano(event.created_at)}  "
                                 f"{_KIND.get(event.container_event_type, 'unknown'):8} "
                                 f"{output.truncate_id(event.container_id)}  {name or '-'}  "
                                 f"pod {pod.metadata.namespace}/{pod.metadata.name}\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


__all__ = ["events"]
