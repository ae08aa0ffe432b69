"""`crib daemon` and `crib config`: the server and its effective configuration."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from crib import config as config_mod
from crib import log
from crib.errors import ConfigError

_FLAGS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option("--config", "config_file", metavar="FILE", default=None,
                 help=f"Main config file [default: {config_mod.DEFAULT_CONFIG_FILE} if present]."),
    click.option("--config-dir", metavar="DIR", default=None,
                 help=f"Drop-in directory read after it [default: {config_mod.DEFAULT_CONFIG_DIR}]."),
    click.option("--root", metavar="DIR", default=None, help="Persistent data directory."),
    click.option("--runroot", metavar="DIR", default=None, help="Volatile state directory."),
    click.option("--listen", metavar="URL", default=None, help="CRI socket, unix://PATH."),
    click.option("--log-level", type=click.Choice(log.LEVELS), default=None),
    click.option("--log-format", type=click.Choice(log.FORMATS), default=None),
]


def _config_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_FLAGS):
        func = option(func)
    return func


def _load(config_file: str | None, config_dir: str | None, **flags: str | None) -> config_mod.Config:
    overrides = {key: value for key, value in flags.items() if value is not None}
    try:
        return config_mod.load(config_file, config_dir, overrides)
    except ConfigError as exc:
        click.echo(f"crib: configuration error: {exc}", err=True)
        sys.exit(2)


@click.command()
@_config_flags
def daemon(config_file: str | None, config_dir: str | None, **flags: str | None) -> None:
    """Serve the CRI on a unix socket until SIGTERM or SIGINT."""
    from crib import daemon as daemon_mod  # the server stack is only imported when serving

    cfg = _load(config_file, config_dir, **flags)
    log.setup(cfg.log_level, cfg.log_format)
    sys.exit(daemon_mod.run(cfg))


@click.command()
@_config_flags
@click.option("--get", default=None, metavar="KEY", help="Client config: show one option (as crictl config).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE[,KEY=VALUE]",
              help="Client config: set options in the crictl.yaml that -c/--config names.")
@click.option("--list", "list_", is_flag=True, help="Client config: show every option.")
@click.argument("pair", nargs=-1, metavar="[KEY VALUE]")
@click.pass_context
def config(ctx: click.Context, /, config_file: str | None, config_dir: str | None, get: str | None,
           settings: tuple[str, ...], list_: bool, pair: tuple[str, ...], **flags: str | None) -> None:
    """Print the daemon's effective configuration as commented TOML; with --get, --set, --list or KEY VALUE,
    read or change the client's crictl.yaml instead (crictl's `config`)."""
    if get is not None or settings or list_ or pair:
        from crib.cli.commands import clientconfig

        clientconfig.run(ctx.find_root().obj.config_path, get, settings, list_, pair)
        return
    cfg = _load(config_file, config_dir, **flags)
    click.echo(config_mod.render_toml(cfg), nl=False)


__all__ = ["config", "daemon"]
