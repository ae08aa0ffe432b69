"""Turning CRI messages into what a person or a script reads, in crictl's shapes.

`-o json` and `-o yaml` print protojson with default values (lowerCamel field names, int64 as strings,
enum names), exactly the documents crictl prints, so scripts written against crictl (jq paths such as
`.containers[].id` or `.status.network.ip`) keep working. Tables follow crictl's columns and Go's
tabwriter layout (minimum width 20, padding 3). yaml and json_format are imported only when used: the
plain list commands stay quick to start.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from crib.cli.errors import CliError

FORMATS = ("table", "json", "yaml")
STATUS_FORMATS = ("json", "yaml", "go-template", "table")


def message_dict(msg: Any) -> dict[str, Any]:
    """protojson with default values, in lowerCamel: the shape crictl prints."""
    from google.protobuf import json_format

    doc: dict[str, Any] = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    return doc


def plain_dict(msg: Any) -> dict[str, Any]:
    """Go's encoding/json of a CRI struct (snake_case, zero values left out): crictl's `info` features."""
    from google.protobuf import json_format

    doc: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return doc


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def to_yaml(data: Any) -> str:
    """YAML as sigs.k8s.io/yaml writes it from JSON: block style, keys sorted."""
    import yaml

    text: str = yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)
    return text


def emit(data: Any, fmt: str, template: str = "") -> None:
    """Print a document as json, yaml or a go-template."""
    if fmt == "json":
        sys.stdout.write(dumps(data) + "\n")
    elif fmt == "yaml":
        sys.stdout.write(to_yaml(data))
    elif fmt == "go-template":
        sys.stdout.write(render_template(template, data) + "\n")
    else:
        raise ValueError(f"unsupported output format {fmt!r}")


def info_value(text: str) -> Any:
    """A verbose info value as crictl shows it: a JSON object when it looks like one, else the string."""
    if text.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text.strip('"')


def status_doc(status: dict[str, Any], info: Any) -> dict[str, Any]:
    """crictl's inspect* document: the status, then every info key in sorted order."""
    doc: dict[str, Any] = {"status": status}
    for key in sorted(info):
        doc[key] = info_value(info[key])
    return doc


def emit_statuses(docs: Sequence[dict[str, Any]], fmt: str, template: str = "") -> None:
    """One document alone, several as a list (crictl's "old behaviour" kept for scripts)."""
    if docs:
        emit(docs[0] if len(docs) == 1 else list(docs), fmt, template)


# ------------------------------------------------------------------------------------------- tables


class Table:
    """Rows laid out like Go's tabwriter with crictl's settings (min width 20, padding 3)."""

    def __init__(self, header: Sequence[str] | None = None, *, min_width: int = 20, padding: int = 3) -> None:
        self.rows: list[list[str]] = [list(header)] if header else []
        self.min_width = min_width
        self.padding = padding

    def add(self, row: Iterable[Any]) -> None:
        self.rows.append([str(cell) for cell in row])

    def render(self) -> str:
        if not self.rows:
            return ""
        ncols = max(len(r) for r in self.rows)
        widths = [0] * ncols
        for row in self.rows:
            for i, cell in enumerate(row[:-1]):  # the last cell of a line is not a column
                widths[i] = max(widths[i], len(cell) + self.padding, self.min_width)
        lines = []
        for row in self.rows:
            cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + row[-1:]
            lines.append("".join(cells).rstrip())
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        sys.stdout.write(self.render())


def human_size(n: float, precision: int = 4) -> str:
    """go-units HumanSizeWithPrecision (decimal units): "1.23MB"."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    n = float(n)
    while n >= 1000.0 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    return f"{n:.{precision}g}{units[i]}"


def truncate_id(ident: str, prefix: str = "", length: int = 13) -> str:
    return ident.removeprefix(prefix)[:length]


def ago(nanos: int, now: float | None = None) -> str:
    from crib.cli.timeparse import human_duration

    now = time.time() if now is None else now
    return human_duration(now - nanos / 1e9) + " ago"


def rfc3339nano(nanos: int) -> str:
    """Go's time.Unix(0, ns).Format(RFC3339Nano) in UTC: trailing zeros of the fraction dropped."""
    secs, frac = divmod(nanos, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{frac:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


GO_ZERO_TIME = "0001-01-01T00:00:00Z"


# ----------------------------------------------------------------------------------------- templates

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)


class TemplateError(CliError, ValueError):
    """A go-template crib cannot run; the message says which part."""


def _lookup(data: Any, path: str) -> Any:
    value = data
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise TemplateError(f"map has no entry for key {part!r} (in {path!r})")
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return _go_print(value)
    return "" if value is None else str(value)


def _go_print(value: Any) -> str:
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_print(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_print(v) for v in value) + "]"
    return _text(value)


def render_template(template: str, data: Any) -> str:
    """The subset of Go templates crictl users write: `{{.a.b}}` and `{{json|upper|lower|title .a}}`.

    Raises:
        TemplateError: an action outside that subset, or a missing key (crictl: missingkey=error).
    """
    funcs = {"json": lambda v: json.dumps(v) + "\n", "upper": lambda v: _text(v).upper(),
             "lower": lambda v: _text(v).lower(), "title": lambda v: _text(v).title()}

    def action(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        if expr.startswith("."):
            return _text(_lookup(data, expr))
        name, _, arg = expr.partition(" ")
        if name in funcs and arg.strip().startswith("."):
            return str(funcs[name](_lookup(data, arg.strip())))
        raise TemplateError(f"crib runs only field paths ({{{{.status.id}}}}) and json/upper/lower/title in "
                            f"templates, not {{{{{expr}}}}}; use -o json with jq for more")

    return _ACTION.sub(action, template)


__all__ = ["FORMATS", "GO_ZERO_TIME", "STATUS_FORMATS", "Table", "TemplateError", "ago", "dumps", "emit",
           "emit_statuses", "human_size", "info_value", "message_dict", "plain_dict", "render_template",
           "rfc3339nano", "status_doc", "to_yaml", "truncate_id"]
