"""The client's own settings file (crictl.yaml: `crib config --get/--set/--list`) and shell completion.

Writing keeps the file's comments and order: a key's line is replaced in place and missing keys are
appended, every key crictl knows is written (as `crictl config` does), and the file is replaced
atomically with mode 0600.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click

from crib.cli import output
from crib.cli.client import CONFIG_KEYS, ClientError, read_client_config

DEFAULTS: dict[str, Any] = {"runtime-endpoint": "", "image-endpoint": "", "timeout": 0, "debug": False,
                            "pull-image-on-create": False, "disable-pull-on-run": False, "max-retries": 3}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _typed(key: str, value: str) -> Any:
    if key not in CONFIG_KEYS:
        raise ClientError(f"no configuration option named {key}; options: {', '.join(CONFIG_KEYS)}")
    kind = CONFIG_KEYS[key]
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0", "t", "f"):
            raise ClientError(f"parse {key} value {value!r}: use true or false")
        return value.lower() in ("true", "1", "t")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ClientError(f"parse {key} value {value!r}: not a whole number") from None
    return value


def write(path: str, values: dict[str, Any]) -> None:
    """Write every key, keeping the existing file's comments and the position of its keys."""
    target = Path(path)
    try:
        lines = target.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    done: set[str] = set()
    out = []
    for line in lines:
        key = line.split(":", 1)[0].strip()
        if key in values and not line.startswith((" ", "\t", "#")):
            if key not in done:
                out.append(f"{key}: {_text(values[key])}")
                done.add(key)
            continue
        out.append(line)
    out += [f"{key}: {_text(values[key])}" for key in CONFIG_KEYS if key not in done]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(out) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def run(path: str, get: str | None, settings: tuple[str, ...], list_: bool, pair: tuple[str, ...]) -> None:
    """crictl config: --get KEY, --set K=V[,K=V] (repeatable), --list, or KEY VALUE."""
    values = DEFAULTS | read_client_config(path)  # reading never creates the file (crictl's would)
    if get is not None:
        if get not in CONFIG_KEYS:
            raise ClientError(f"no configuration option named {get}")
        click.echo(_text(values[get]))
        return
    if list_:
        table = output.Table(["KEY", "VALUE"])
        for key in CONFIG_KEYS:
            table.add([key, _text(values[key])])
        table.print()
        return
    if settings:
        for setting in settings:
            for option in setting.split(","):
                key, sep, value = option.partition("=")
                if not sep or "=" in value:
                    raise ClientError(f"incorrectly specified option: {setting}")
                values[key] = _typed(key, value)
    elif len(pair) == 2:
        values[pair[0]] = _typed(pair[0], pair[1])
    else:
        raise click.UsageError("use --get KEY, --set KEY=VALUE, --list, or KEY VALUE")
    write(path, values)


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]), required=False, default="bash")
def completion(shell: str) -> None:
    """Print a completion script for bash, zsh or fish (source it, or put it where the shell finds it)."""
    from click.shell_completion import get_completion_class

    from crib.cli.main import cli

    cls = get_completion_class(shell)
    assert cls is not None  # click ships all three
    click.echo(cls(cli, {}, "crib", "_CRIB_COMPLETE").source())


__all__ = ["DEFAULTS", "completion", "run", "write"]
