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
def config(config_file: str | None, config_dir: str | None, **flags: str | None) -> None:
    """Print the effective configuration as commented TOML."""
    cfg = _load(config_file, config_dir, **flags)
    click.echo(config_mod.render_toml(cfg), nl=False)


def register(group: click.Group) -> None:
    group.add_command(daemon)
    group.add_command(config)


__all__ = ["register"]
