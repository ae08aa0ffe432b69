"""Pull progress for `crib pull`, `crib run` and `crib image pull`: what crictl cannot show.

When the image endpoint is crib, the pull goes through crib's extension call `crib.images.v1.Images/Pull`,
which streams a progress document four times a second: the phase, total bytes, and per layer its digest,
size, bytes done and state (queued, active, done). On a terminal each layer gets a live bar with bytes and
rate (rich, imported only then); otherwise one line per phase change and per finished layer goes to
stderr; with quiet nothing. Any other runtime answers UNIMPLEMENTED and the caller falls back to a plain
CRI PullImage.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from crib.cli.client import Client, ClientError

EXT_PULL = "/crib.images.v1.Images/Pull"  # mirrors crib.cri.image_servicer.EXT_PULL


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class _Plain:
    """Lines on stderr: `REF: PHASE (done/total bytes, n/m layers)` and one per finished layer."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.phase = ""
        self.finished: set[str] = set()

    def update(self, snap: dict[str, Any], layers: list[dict[str, Any]]) -> None:
        for layer in layers:
            if layer.get("state") == "done" and layer["digest"] not in self.finished:
                self.finished.add(layer["digest"])
                size = layer.get("size", 0)
                click.echo(f"  layer {_short(layer['digest'])}: done ({size} bytes)", err=True)
        if snap.get("phase") != self.phase:
            self.phase = snap.get("phase", "")
            sizes = f"{snap.get('done_bytes', 0)}/{snap.get('total_bytes', 0)} bytes"
            count = f"{snap.get('layers_done', 0)}/{snap.get('layers', 0)} layers"
            click.echo(f"{self.ref}: {self.phase} ({sizes}, {count})", err=True)

    def close(self) -> None:
        pass


class _Bars:
    """One live bar per layer (bytes, rate) under a line for the whole pull, drawn by rich on stderr."""

    def __init__(self, ref: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.ref = ref
        console = Console(stderr=True)
        console.print(f"pulling {ref}", highlight=False)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeElapsedColumn(), console=console, refresh_per_second=8)
        self.total = self.bar.add_task("resolving", total=None)
        self.tasks: dict[str, Any] = {}
        self.bar.start()

    def update(self, snap: dict[str, Any], layers: list[dict[str, Any]]) -> None:
        for layer in layers:
            task = self.tasks.get(layer["digest"])
            if task is None:
                task = self.tasks[layer["digest"]] = self.bar.add_task(
                    f"  {_short(layer['digest'])}", total=layer.get("size") or None)
            state = layer.get("state", "")
            label = {"queued": "waiting", "done": "done"}.get(state, "")
            self.bar.update(task, completed=layer.get("done", 0),
                            description=f"  {_short(layer['digest'])} {label}".rstrip())
        count = f"{snap.get('layers_done', 0)}/{snap.get('layers', 0)} layers"
        phase = snap.get("phase", "")
        self.bar.update(self.total, completed=snap.get("done_bytes", 0),
                        total=snap.get("total_bytes") or None, description=f"{phase}, {count}")

    def close(self) -> None:
        self.bar.stop()


def _stream(client: Client, ref: str, auth: dict[str, str],
            timeout: float | None) -> Iterator[dict[str, Any]]:
    channel = client.channel(client.endpoints.image)
    call = channel.unary_stream(EXT_PULL, request_serializer=lambda d: json.dumps(d).encode(),
                                response_deserializer=json.loads)
    client.debug(f"crib extension Pull: {ref}")
    yield from call({"image": ref, "auth": auth}, timeout=timeout)


def pull_with_progress(client: Client, ref: str, auth: dict[str, str], *, timeout: float | None,
                       quiet: bool) -> str | None:
    """Pull through crib's extension, showing progress; the image id, or None when the runtime is not crib.

    Raises:
        ClientError: the pull failed.
    """
    import grpc

    view: _Plain | _Bars | None = None
    result: dict[str, Any] | None = None
    try:
        for message in _stream(client, ref, auth, timeout):
            if "image" in message:
                result = message["image"]
            if quiet:
                continue
            if view is None:
                view = _Bars(ref) if sys.stderr.isatty() else _Plain(ref)
            view.update(message.get("progress") or {}, message.get("transfers") or [])
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise client.error(exc, timeout) from None
    finally:
        if view is not None:
            view.close()
    if result is None:
        raise ClientError(f"the runtime ended the pull of {ref} without a result")
    return str(result["id"])


__all__ = ["EXT_PULL", "pull_with_progress"]
