"""What several commands share: output and filter flags, and listing with crictl's client-side filters.

crictl filters by name and namespace regular expressions and by image on the client, sorts newest first
and cuts with --latest/--last; ps, inspect, exec and top all select containers that way, so it lives here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli.client import Client, ClientError
from crib.cli.output import FORMATS

POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"

CONTAINER_STATES = {"created": api.CONTAINER_CREATED, "running": api.CONTAINER_RUNNING,
                    "exited": api.CONTAINER_EXITED, "unknown": api.CONTAINER_UNKNOWN}
POD_STATES = {"ready": api.SANDBOX_READY, "notready": api.SANDBOX_NOTREADY}
CONTAINER_STATE_WORDS = {v: k.capitalize() for k, v in CONTAINER_STATES.items()}
POD_STATE_WORDS = {api.SANDBOX_READY: "Ready", api.SANDBOX_NOTREADY: "NotReady"}

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def client_of(ctx: click.Context) -> Client:
    state = ctx.find_root().obj
    client: Client = state.client()
    return client


def output_option(default: str | None = "table", choices: Sequence[str] = FORMATS) -> Decorator:
    return click.option("-o", "--output", "fmt", type=click.Choice(list(choices)), default=default,
                        show_default=True, help="Output format.")


def template_option() -> Decorator:
    return click.option("--template", default="", help="The template for -o go-template ({{.status.id}}).")


def status_options() -> Decorator:
    """inspect, inspectp, inspecti: -o (json by default), -q (no verbose info) and --template."""
    from crib.cli.output import STATUS_FORMATS

    return apply([output_option(default="json", choices=STATUS_FORMATS),
                  click.option("-q", "--quiet", is_flag=True, help="Do not show verbose information."),
                  template_option()])


def label_option(help_text: str = "Filter by key=value label (repeatable).") -> Decorator:
    return click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help=help_text)


def apply(options: Sequence[Any]) -> Decorator:
    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func
    return wrap


def parse_labels(values: Sequence[str], flag: str = "--label") -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or "=" in val or not key:
            raise click.BadParameter(f"{value!r}: use key=value", param_hint=flag)
        out[key] = val
    return out


def compile_regex(pattern: str, flag: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise click.BadParameter(f"invalid regular expression {pattern!r}: {exc}", param_hint=flag) from None


def _matches(regex: re.Pattern[str] | None, text: str) -> bool:
    return regex is None or regex.search(text) is not None


def cut(items: list[Any], latest: bool, last: int) -> list[Any]:
    items.sort(key=lambda item: item.created_at, reverse=True)
    n = len(items)
    if latest:
        n = 1
    if last > 0:
        n = last
    return items[:min(n, len(items))]


def container_state(word: str) -> Any:
    try:
        return CONTAINER_STATES[word.lower()]
    except KeyError:
        raise click.BadParameter("should be one of created, running, exited or unknown",
                                 param_hint="--state") from None


def _image_id(client: Client, ref: str) -> str:
    resp = client.call("ImageStatus", api.ImageStatusRequest(image=api.ImageSpec(image=ref)), image=True)
    return str(resp.image.id) if resp.HasField("image") else ""


def list_containers(client: Client, *, cid: str = "", pod: str = "", state: str = "", all_: bool = False,
                    labels: dict[str, str] | None = None, name: str = "", namespace: str = "",
                    image: str = "", latest: bool = False, last: int = 0) -> list[Any]:
    """Containers as crictl's ps selects them (running only unless all_, state, latest or last)."""
    filt = api.ContainerFilter(id=cid, pod_sandbox_id=pod, label_selector=labels or {})
    if state:
        filt.state.state = container_state(state)
    elif not all_:
        filt.state.state = api.CONTAINER_RUNNING
    if latest or last > 0:
        filt.ClearField("state")
    containers = list(client.call("ListContainers", api.ListContainersRequest(filter=filt)).containers)
    name_re, ns_re = compile_regex(name, "--name"), compile_regex(namespace, "--namespace")
    wanted = _image_id(client, image) if image else ""
    if image and not wanted:
        return []
    out = []
    for c in containers:
        if not _matches(name_re, c.metadata.name):
            continue
        if not _matches(ns_re, c.labels.get(POD_NAMESPACE_LABEL, "unknown")):
            continue
        if image and _image_id(client, c.image.image) != wanted:
            continue
        out.append(c)
    return cut(out, latest, last)


def list_pods(client: Client, *, pid: str = "", state: str = "", labels: dict[str, str] | None = None,
              name: str = "", namespace: str = "", latest: bool = False, last: int = 0) -> list[Any]:
    """Pods as crictl's pods selects them."""
    filt = api.PodSandboxFilter(id=pid, label_selector=labels or {})
    if state:
        try:
            filt.state.state = POD_STATES[state.lower()]
        except KeyError:
            raise click.BadParameter("should be ready or notready", param_hint="--state") from None
    items = list(client.call("ListPodSandbox", api.ListPodSandboxRequest(filter=filt)).items)
    name_re, ns_re = compile_regex(name, "--name"), compile_regex(namespace, "--namespace")
    out = [p for p in items if _matches(name_re, p.metadata.name) and _matches(ns_re, p.metadata.namespace)]
    return cut(out, latest, last)


def need_ids(ids: Sequence[str], what: str) -> None:
    if not ids:
        raise click.UsageError(f"no {what} ID given (and nothing matched the filters)")


def echo_ids(items: Sequence[Any]) -> None:
    """-q: one id per line."""
    click.echo("".join(f"{item.id}\n" for item in items), nl=False)


def echo_mappings(obj: Any) -> None:
    """crictl's verbose/table form of an object's labels and annotations."""
    for title, mapping in (("Labels", obj.labels), ("Annotations", obj.annotations)):
        if mapping:
            click.echo(f"{title}:")
            for key in sorted(mapping):
                click.echo(f"\t{key} -> {mapping[key]}")


def show_statuses(ids: Sequence[str], fetch: Callable[[str], Any], table: Callable[[Any], None],
                  doc: Callable[[Any], dict[str, Any]], fmt: str, template: str) -> None:
    """inspect, inspectp, inspecti: each status as a table, or all as one json/yaml/template output."""
    from crib.cli import output

    docs = []
    for ident in ids:
        resp = fetch(ident)
        if fmt == "table":
            table(resp)
        else:
            docs.append(doc(resp))
    output.emit_statuses(docs, fmt, template)


def removal_targets(ids: Sequence[str], all_: bool, list_all: Callable[[], list[str]],
                    what: str) -> list[str]:
    """rm/rmp: the ids given, or with -a every one there is (none is a note, not an error)."""
    targets = list_all() if all_ else list(ids)
    if all_ and not targets:
        click.echo(f"No {what}s to remove", err=True)
    elif not targets:
        need_ids(targets, what)
    return targets


def for_each(ids: Sequence[str], action: Callable[[str], None]) -> None:
    """Run action on every id, reporting each failure, failing at the end if any did (crictl's rm/rmp)."""
    failed = []
    for ident in ids:
        try:
            action(ident)
        except ClientError as exc:
            click.echo(f"crib: {ident}: {exc}", err=True)
            failed.append(ident)
    if failed:
        raise SystemExit(1)


__all__ = [
    "CONTAINER_STATE_WORDS",
    "POD_NAMESPACE_LABEL",
    "POD_NAME_LABEL",
    "POD_STATE_WORDS",
    "apply",
    "client_of",
    "compile_regex",
    "container_state",
    "cut",
    "echo_ids",
    "echo_mappings",
    "for_each",
    "label_option",
    "list_containers",
    "list_pods",
    "need_ids",
    "output_option",
    "parse_labels",
    "removal_targets",
    "show_statuses",
    "status_options",
    "template_option",
]
