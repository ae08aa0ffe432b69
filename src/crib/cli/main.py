"""`crib`: the daemon's entry point and a CRI client in the manner of crictl."""

from __future__ import annotations

import sys
from typing import Any

import click

from crib import __version__
from crib.cli.client import Client, ClientError, resolve
from crib.cli.commands import daemon as daemon_cmds
from crib.cli.commands import image as image_cmds
from crib.cli.commands import system as system_cmds


class CliState:
    """Global options, and the client built from them on first use."""

    def __init__(self, runtime_endpoint: str | None, image_endpoint: str | None, timeout: float) -> None:
        self.runtime_endpoint = runtime_endpoint
        self.image_endpoint = image_endpoint
        self.timeout = timeout
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(resolve(self.runtime_endpoint, self.image_endpoint), self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class _Group(click.Group):
    """Turns ClientError into one line on stderr and exit status 1, instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            click.echo(f"crib: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-r", "--runtime-endpoint", envvar=None, default=None,
              help="CRI endpoint (unix://PATH). Default: $CONTAINER_RUNTIME_ENDPOINT, /etc/crictl.yaml, "
                   "then unix:///run/crib/crib.sock.")
@click.option("-i", "--image-endpoint", default=None, help="Image service endpoint; default: the runtime's.")
@click.option("-t", "--timeout", default=10.0, show_default=True, type=float,
              help="Seconds to wait for each call.")
@click.version_option(__version__, "--version", prog_name="crib")
@click.pass_context
def cli(ctx: click.Context, runtime_endpoint: str | None, image_endpoint: str | None, timeout: float) -> None:
    """crib: a small Kubernetes container runtime, and a client for any CRI runtime."""
    state = CliState(runtime_endpoint, image_endpoint, timeout)
    ctx.obj = state
    ctx.call_on_close(state.close)


daemon_cmds.register(cli)
system_cmds.register(cli)
image_cmds.register(cli)


def main() -> None:
    cli(prog_name="crib")


__all__ = ["CliState", "cli", "main"]
