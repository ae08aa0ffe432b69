"""`crib`: the daemon's entry point and a CRI client with crictl's commands, flags and output.

Commands are imported only when invoked (LazyGroup): `crib ps -q` loads the ps code, grpc and the
generated messages, not the daemon, yaml or rich. Errors are one line on stderr (`crib: CODE: message`,
with a hint where one helps) and exit status 1; usage errors exit 2, as click's do.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from crib.cli.errors import CliError

if TYPE_CHECKING:  # the client is loaded by commands that use it, not by `crib daemon`
    from crib.cli.client import Client, Settings

# name -> "module:attribute" under crib.cli.commands; aliases point at the same command.
COMMANDS: dict[str, str] = {
    "attach": "exec:attach", "completion": "clientconfig:completion", "config": "daemon:config",
    "create": "containers:create", "daemon": "daemon:daemon", "events": "events:events",
    "exec": "exec:exec_", "image": "image:image", "imagefsinfo": "images:imagefsinfo",
    "images": "images:images", "img": "images:images", "info": "system:info",
    "inspect": "containers:inspect", "inspecti": "images:inspecti", "inspectp": "pods:inspectp",
    "logs": "logs:logs", "metricdescs": "metrics:metricdescs", "metricsp": "metrics:metricsp",
    "pods": "pods:pods", "port-forward": "exec:port_forward", "ps": "containers:ps",
    "pull": "images:pull", "rm": "containers:rm", "rmi": "images:rmi", "rmp": "pods:rmp",
    "run": "containers:run", "runp": "pods:runp", "runtime-config": "system:runtime_config",
    "start": "containers:start", "stats": "containers:stats", "statsp": "pods:statsp",
    "stop": "containers:stop", "stopp": "pods:stopp", "top": "top:top", "update": "containers:update",
    "update-runtime-config": "system:update_runtime_config", "version": "system:version",
    "event": "events:events",
}
HIDDEN_ALIASES = {"img", "event"}


class CliState:
    """Global options, and the settings and client built from them on first use."""

    def __init__(self, *, runtime_endpoint: str | None, image_endpoint: str | None, timeout: str | None,
                 debug: bool, config: str | None) -> None:
        self.runtime_endpoint = runtime_endpoint
        self.image_endpoint = image_endpoint
        self.timeout_flag = timeout
        self.debug_flag = debug
        self.config_flag = config
        self._settings: Settings | None = None
        self._client: Client | None = None

    @property
    def config_path(self) -> str:
        from crib.cli.client import config_path

        return config_path(self.config_flag)

    def settings(self) -> Settings:
        from crib.cli.client import ClientError, resolve

        if self._settings is None:
            if self.config_flag and not os.path.exists(self.config_flag):
                raise ClientError(f"load config file: {self.config_flag} does not exist (from -c/--config; "
                                  "`crib config --set KEY=VALUE` creates it)")
            self._settings = resolve(self.runtime_endpoint, self.image_endpoint, self.config_path,
                                     timeout_flag=self.timeout_flag, debug_flag=self.debug_flag)
        return self._settings

    def client(self) -> Client:
        from crib.cli.client import Client

        if self._client is None:
            self._client = Client(self.settings())
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class LazyGroup(click.Group):
    """Loads a command's module when it is used; turns known errors into one line and exit status 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n in COMMANDS if n not in HIDDEN_ALIASES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command: click.Command = getattr(importlib.import_module(f"crib.cli.commands.{module}"), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            click.echo(f"crib: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config", metavar="FILE", default=None,
              help="Client config file (crictl.yaml) [default: $CRI_CONFIG_FILE, else /etc/crictl.yaml].")
@click.option("-r", "--runtime-endpoint", default=None, metavar="URL",
              help="CRI endpoint (unix://PATH). Default: $CONTAINER_RUNTIME_ENDPOINT, the config file, "
                   "then unix:///run/crib/crib.sock.")
@click.option("-i", "--image-endpoint", default=None, metavar="URL",
              help="Image service endpoint [default: $IMAGE_SERVICE_ENDPOINT, the config file, the "
                   "runtime's].")
@click.option("-t", "--timeout", default=None, metavar="DURATION",
              help="Deadline of each call: 2s, 1m30s or seconds [default: the config file's, else 10s].")
@click.option("-D", "--debug", is_flag=True, default=False, help="Print each request and response on stderr.")
@click.option("--max-retries", type=int, default=None, hidden=True,
              help="Accepted for crictl compatibility; crib does not retry connecting.")
@click.version_option(None, "--version", prog_name="crib", package_name="crib")
@click.pass_context
def cli(ctx: click.Context, config: str | None, runtime_endpoint: str | None, image_endpoint: str | None,
        timeout: str | None, debug: bool, max_retries: int | None) -> None:
    """crib: a small Kubernetes container runtime, and a client for any CRI runtime (crictl's commands)."""
    state = CliState(runtime_endpoint=runtime_endpoint, image_endpoint=image_endpoint, timeout=timeout,
                     debug=debug, config=config)
    ctx.obj = state
    ctx.call_on_close(state.close)


def main() -> None:
    cli(prog_name="crib")


__all__ = ["COMMANDS", "CliState", "cli", "main"]
