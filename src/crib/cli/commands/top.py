"""`crib top`: a live view of pods and their containers (state, CPU %, memory, restarts, age).

Every figure comes through the CRI (ListPodSandbox, ListContainers, ListPodSandboxStats,
ListContainerStats), so top works against any runtime that answers the stats calls. CPU % is the usage
between two refreshes (100 % is one core). On a terminal the screen is redrawn every --interval seconds
and keys act at once (q quits; c, m, n, a, r sort by CPU, memory, name, age, restarts); otherwise, or with
--batch, frames are printed one after another. -n stops after that many frames.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output
from crib.cli.client import Client
from crib.cli.commands._common import CONTAINER_STATE_WORDS, POD_STATE_WORDS, client_of, compile_regex
from crib.cli.timeparse import human_duration

SORT_KEYS = {"c": "cpu", "m": "mem", "n": "name", "a": "age", "r": "restarts"}


@dataclass(slots=True, kw_only=True)
class Row:
    kind: str  # "pod" or "container"
    ident: str
    name: str
    state: str
    cpu: float | None
    mem: int
    restarts: int
    created: int
    children: list[Row] = field(default_factory=list)


class Sampler:
    """Keeps the previous CPU reading of each object to turn cumulative usage into a percentage."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def percent(self, ident: str, cpu: Any) -> float | None:
        now = (cpu.timestamp, cpu.usage_core_nano_seconds.value)
        before = self._last.get(ident)
        self._last[ident] = now
        if before is None or now[0] <= before[0]:
            return None
        return float(max(0.0, (now[1] - before[1]) / (now[0] - before[0]) * 100.0))


def collect(client: Client, sampler: Sampler, *, pod: str, namespace: str, name: str) -> list[Row]:
    """One reading of every pod and container matching the filters."""
    ns_re, name_re = compile_regex(namespace, "--namespace"), compile_regex(name, "--name")
    pods = [p for p in client.call("ListPodSandbox", api.ListPodSandboxRequest(
        filter=api.PodSandboxFilter(id=pod))).items
        if (ns_re is None or ns_re.search(p.metadata.namespace))
        and (name_re is None or name_re.search(p.metadata.name))]
    wanted = {p.id for p in pods}
    containers = [c for c in client.call("ListContainers", api.ListContainersRequest()).containers
                  if c.pod_sandbox_id in wanted]
    pod_stats = {s.attributes.id: s for s in client.call(
        "ListPodSandboxStats", api.ListPodSandboxStatsRequest()).stats}
    ctr_stats = {s.attributes.id: s for s in client.call(
        "ListContainerStats", api.ListContainerStatsRequest()).stats}
    rows: dict[str, Row] = {}
    for p in pods:
        st = pod_stats.get(p.id)
        rows[p.id] = Row(kind="pod", ident=p.id, name=f"{p.metadata.namespace}/{p.metadata.name}",
                         state=POD_STATE_WORDS.get(p.state, "Unknown"), created=p.created_at, restarts=0,
                         cpu=sampler.percent(p.id, st.linux.cpu) if st else None,
                         mem=st.linux.memory.working_set_bytes.value if st else 0)
    for c in containers:
        st = ctr_stats.get(c.id)
        row = Row(kind="container", ident=c.id, name=c.metadata.name,
                  state=CONTAINER_STATE_WORDS.get(c.state, "Unknown"), created=c.created_at,
                  restarts=c.metadata.attempt, cpu=sampler.percent(c.id, st.cpu) if st else None,
                  mem=st.memory.working_set_bytes.value if st else 0)
        parent = rows[c.pod_sandbox_id]
        parent.children.append(row)
        parent.restarts += row.restarts
    return list(rows.values())


def _order(rows: list[Row], key: str) -> list[Row]:
    keys: dict[str, Any] = {"cpu": lambda r: -(r.cpu or 0.0), "mem": lambda r: -r.mem,
                            "name": lambda r: r.name, "age": lambda r: r.created,
                            "restarts": lambda r: -r.restarts}
    return sorted(rows, key=keys[key])


def render(rows: list[Row], sort: str, now: float | None = None) -> str:
    """The frame: a summary line and a table of pods, each followed by its containers."""
    now = time.time() if now is None else now
    ncontainers = sum(len(r.children) for r in rows)
    head = (f"crib top - {time.strftime('%H:%M:%S', time.localtime(now))} - {len(rows)} pods, "
            f"{ncontainers} containers - sort: {sort} (c m n a r sort, q quits)\n\n")
    table = output.Table(["NAME", "ID", "STATE", "CPU %", "MEM", "RESTARTS", "AGE"], min_width=0, padding=2)
    for pod in _order(rows, sort):
        for row, label in [(pod, pod.name)] + [(c, f"  {c.name}") for c in _order(pod.children, sort)]:
            table.add([label, output.truncate_id(row.ident), row.state,
                       "-" if row.cpu is None else f"{row.cpu:.1f}",
                       output.human_size(row.mem, 3) if row.mem else "-", row.restarts,
                       human_duration(now - row.created / 1e9)])
    return head + table.render()


@contextmanager
def _keys(interactive: bool) -> Iterator[int | None]:
    """stdin in cbreak mode (keys without Enter, no echo) for the duration; its fd, or None."""
    if not interactive:
        yield None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@click.command()
@click.option("-p", "--pod", default="", help="Only this pod (an id or id prefix).")
@click.option("--namespace", default="", help="Only pods whose namespace matches this regex.")
@click.option("--name", default="", help="Only pods whose name matches this regex.")
@click.option("-s", "--sort", type=click.Choice(sorted(SORT_KEYS.values())), default="cpu", show_default=True,
              help="Sort pods, and containers within a pod.")
@click.option("-d", "--interval", type=float, default=1.0, show_default=True, help="Seconds between frames.")
@click.option("-n", "--iterations", type=int, default=0, help="Stop after this many frames (0: until q).")
@click.option("-b", "--batch", is_flag=True, help="Print frames one after another, without redrawing.")
@click.pass_context
def top(ctx: click.Context, pod: str, namespace: str, name: str, sort: str, interval: float, iterations: int,
        batch: bool) -> None:
    """A live view of pods and containers: state, CPU %, memory, restarts and age."""
    client = client_of(ctx)
    sampler = Sampler()
    live = not batch and sys.stdout.isatty()
    interactive = live and sys.stdin.isatty()
    collect(client, sampler, pod=pod, namespace=namespace, name=name)  # a first reading for CPU %
    frames = 0
    try:
        with _keys(interactive) as fd:
            deadline = time.monotonic() + min(interval, 0.5)
            while True:
                timeout = max(0.0, deadline - time.monotonic())
                if fd is None:
                    time.sleep(timeout)
                if fd is not None and select.select([fd], [], [], timeout)[0]:
                    key = os.read(fd, 1).decode(errors="replace").lower()
                    if key == "q":
                        return
                    if key in SORT_KEYS:
                        sort = SORT_KEYS[key]
                    else:
                        continue
                else:
                    deadline = time.monotonic() + interval
                rows = collect(client, sampler, pod=pod, namespace=namespace, name=name)
                frame = render(rows, sort)
                sys.stdout.write(("\033[H\033[2J" + frame) if live else frame + "\n")
                sys.stdout.flush()
                frames += 1
                if iterations and frames >= iterations:
                    return
    except KeyboardInterrupt:
        return


__all__ = ["Row", "Sampler", "collect", "render", "top"]
