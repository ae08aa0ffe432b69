"""`crib image pull|list|status|rm|import|prune|fsinfo`: the image store, from the command line.

pull, list, status, rm and fsinfo are CRI calls and work against any runtime. pull shows progress when
the runtime is crib (crib's extension streams it) and falls back to a plain CRI PullImage otherwise.
import and prune exist only in crib (CRI has no such calls).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import click
import grpc

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output
from crib.cli.client import Client, ClientError

EXT_SERVICE = "crib.images.v1.Images"  # mirrors crib.cri.image_servicer.EXT_SERVICE


def _ext_channel(client: Client) -> grpc.Channel:
    return grpc.insecure_channel(client.endpoints.image)


def _ext_error(client: Client, exc: grpc.RpcError, what: str) -> ClientError:
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        return ClientError(f"{what} is a crib extension; the runtime at {client.endpoints.image} does not "
                           "offer it")
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        return ClientError(f"cannot reach the runtime at {client.endpoints.image}: {exc.details()}")
    return ClientError(f"{exc.code().name}: {exc.details()}")


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _ext_unary(client: Client, method: str, request: dict[str, Any],
               timeout: float | None) -> dict[str, Any]:
    with _ext_channel(client) as channel:
        call = channel.unary_unary(f"/{EXT_SERVICE}/{method}", request_serializer=_json_bytes,
                                   response_deserializer=json.loads)
        try:
            result: dict[str, Any] = call(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise _ext_error(client, exc, f"crib image {method.lower()}") from None
        return result


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}B"


def _split_ref(tag_or_digest: str) -> tuple[str, str]:
    """(repository, tag) as crictl prints them; <none> when there is no tag."""
    name, at, _ = tag_or_digest.partition("@")
    if at:
        return name, "<none>"
    colon = name.rfind(":")
    if colon != -1 and "/" not in name[colon + 1:]:
        return name[:colon], name[colon + 1:]
    return name, "<none>"


def _auth(creds: str | None, auth: str | None, identity_token: str | None,
          registry_token: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if creds:
        user, sep, password = creds.partition(":")
        if not sep:
            raise click.BadParameter("must be USERNAME:PASSWORD", param_hint="--creds")
        out.update(username=user, password=password)
    if auth:
        out["auth"] = auth
    if identity_token:
        out["identity_token"] = identity_token
    if registry_token:
        out["registry_token"] = registry_token
    return out


def _progress_stream(client: Client, image: str, auth: dict[str, str],
                     timeout: float | None) -> Iterator[dict[str, Any]]:
    channel = _ext_channel(client)
    try:
        call = channel.unary_stream(f"/{EXT_SERVICE}/Pull", request_serializer=_json_bytes,
                                    response_deserializer=json.loads)
        yield from call({"image": image, "auth": auth}, timeout=timeout)
    finally:
        channel.close()


def _pull_with_progress(client: Client, image: str, auth: dict[str, str],
                        timeout: float | None) -> str | None:
    """Pull through crib's extension, drawing progress; None when the runtime is not crib."""
    tty = sys.stderr.isatty()
    bar: Any = None
    task: Any = None
    last_phase = ""
    result: dict[str, Any] | None = None
    try:
        for message in _progress_stream(client, image, auth, timeout):
            snap = message.get("progress") or {}
            if "image" in message:
                result = message["image"]
            if tty:
                if bar is None and snap.get("total_bytes"):
                    from rich.progress import (
                        BarColumn,
                        DownloadColumn,
                        Progress,
                        TextColumn,
                        TimeElapsedColumn,
                        TransferSpeedColumn,
                    )

                    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                   TransferSpeedColumn(), TimeElapsedColumn(), transient=True)
                    bar.start()
                    task = bar.add_task(image, total=snap["total_bytes"])
                if bar is not None:
                    layers = f"{snap.get('layers_done', 0)}/{snap.get('layers', 0)} layers"
                    bar.update(task, completed=snap.get("done_bytes", 0),
                               total=snap.get("total_bytes") or None, description=f"{image} [{layers}]")
            elif snap.get("phase") != last_phase:
                last_phase = snap.get("phase", "")
                sizes = f"{snap.get('done_bytes', 0)}/{snap.get('total_bytes', 0)} bytes"
                layers = f"{snap.get('layers_done', 0)}/{snap.get('layers', 0)} layers"
                click.echo(f"{image}: {last_phase} ({sizes}, {layers})", err=True)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return None
        raise _ext_error(client, exc, "pull") from None
    finally:
        if bar is not None:
            bar.stop()
    if result is None:
        raise ClientError(f"the runtime ended the pull of {image} without a result")
    return str(result["id"])


@click.group("image")
def image() -> None:
    """Pull, list, inspect and remove images (CRI ImageService), import archives, prune."""


@image.command("pull")
@click.argument("ref")
@click.option("--creds", metavar="USER:PASSWORD", help="Registry credentials.")
@click.option("--auth", metavar="BASE64", help="Base64 of USER:PASSWORD, as in a docker config.json.")
@click.option("--identity-token", metavar="TOKEN", help="An OAuth2 refresh token for the registry.")
@click.option("--registry-token", metavar="TOKEN", help="A bearer token for the registry.")
@click.option("--pull-timeout", type=float, default=0.0, show_default=True,
              help="Give up after this many seconds (0: wait; the runtime cancels a stalled pull itself).")
@click.pass_obj
def pull(state: Any, ref: str, creds: str | None, auth: str | None, identity_token: str | None,
         registry_token: str | None, pull_timeout: float) -> None:
    """Pull an image, showing progress; prints its id."""
    client: Client = state.client()
    auth_doc = _auth(creds, auth, identity_token, registry_token)
    timeout = pull_timeout or None
    started = time.monotonic()
    image_id = _pull_with_progress(client, ref, auth_doc, timeout)
    if image_id is None:  # not crib: plain CRI
        click.echo(f"{ref}: pulling (no progress from this runtime)", err=True)
        request = api.PullImageRequest(image=api.ImageSpec(image=ref), auth=api.AuthConfig(**auth_doc))
        image_id = client.call(client.images.PullImage, request, timeout=timeout or 24 * 3600).image_ref
    click.echo(f"Image is up to date for {image_id}")
    click.echo(f"pulled {ref} in {time.monotonic() - started:.1f}s", err=True)


@image.command("list")
@click.argument("filter_ref", required=False, default="")
@click.option("-q", "--quiet", is_flag=True, help="Only image ids.")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--digests", is_flag=True, help="Show repo digests.")
@click.pass_obj
def list_images(state: Any, filter_ref: str, quiet: bool, fmt: str, digests: bool) -> None:
    """List images (optionally only the one FILTER_REF names)."""
    client: Client = state.client()
    request = api.ListImagesRequest(filter=api.ImageFilter(image=api.ImageSpec(image=filter_ref)))
    images = client.call(client.images.ListImages, request).images
    if quiet:
        for img in images:
            click.echo(img.id)
        return
    if fmt == "json":
        click.echo(output.dumps({"images": [output.message_dict(img) for img in images]}))
        return
    rows = [("IMAGE", "TAG", "DIGEST", "IMAGE ID", "SIZE", "PINNED")]
    for img in images:
        digest = img.repo_digests[0].partition("@")[2][7:20] if img.repo_digests else "<none>"
        short_id = img.id.split(":", 1)[-1][:13]
        names = [_split_ref(t) for t in img.repo_tags] or [
            (_split_ref(d)[0], "<none>") for d in img.repo_digests[:1]] or [("<none>", "<none>")]
        for repo, tag in names:
            rows.append((repo, tag, digest, short_id, _human(img.size), "true" if img.pinned else "false"))
    keep = [0, 1, 3, 4] + ([2] if digests else []) + [5]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for row in rows:
        click.echo("   ".join(row[i].ljust(widths[i]) for i in sorted(keep)).rstrip())


@image.command("status")
@click.argument("ref")
@click.pass_obj
def status(state: Any, ref: str) -> None:
    """An image's status and verbose info as JSON (exit 1 when absent)."""
    client: Client = state.client()
    resp = client.call(client.images.ImageStatus,
                       api.ImageStatusRequest(image=api.ImageSpec(image=ref), verbose=True))
    if not resp.HasField("image"):
        click.echo(f"crib: image {ref!r} not found", err=True)
        sys.exit(1)
    doc: dict[str, Any] = {"status": output.message_dict(resp.image)}
    for key in sorted(resp.info):
        doc[key] = output.info_value(resp.info[key])
    click.echo(output.dumps(doc))


@image.command("rm")
@click.argument("refs", nargs=-1, required=True)
@click.pass_obj
def remove(state: Any, refs: tuple[str, ...]) -> None:
    """Remove images (by id, tag or digest); removing an absent one succeeds."""
    client: Client = state.client()
    for ref in refs:
        client.call(client.images.RemoveImage, api.RemoveImageRequest(image=api.ImageSpec(image=ref)))
        click.echo(f"Deleted: {ref}")


@image.command("import")
@click.argument("path", type=click.Path(exists=True))
@click.option("--name", default="", metavar="REPOSITORY",
              help="Repository for OCI layout entries whose ref name is only a tag.")
@click.pass_obj
def import_(state: Any, path: str, name: str) -> None:
    """Load an OCI layout (directory or tar) or a docker-archive tar (docker save) into crib."""
    client: Client = state.client()
    result = _ext_unary(client, "Import", {"path": os.path.abspath(path), "name": name}, timeout=None)
    for note in result.get("notes", []):
        click.echo(f"note: {note}", err=True)
    for img in result.get("images", []):
        names = ", ".join(img.get("repo_tags") or []) or "(untagged)"
        click.echo(f"imported {img['id']} {names}")


@image.command("prune")
@click.option("--all", "all_unused", is_flag=True, help="Also remove every image no container uses (not "
                                                        "pinned).")
@click.pass_obj
def prune(state: Any, all_unused: bool) -> None:
    """Remove blobs and layers no image needs (with --all: unused images too)."""
    client: Client = state.client()
    result = _ext_unary(client, "Prune", {"all": all_unused}, timeout=None)
    for image_id in result.get("removed_images", []):
        click.echo(f"Deleted: {image_id}")
    click.echo(f"freed {_human(result.get('bytes_freed', 0))} ({result.get('blobs', 0)} blobs, "
               f"{result.get('layers', 0)} layers)")


@image.command("fsinfo")
@click.pass_obj
def fsinfo(state: Any) -> None:
    """Bytes and inodes used by images and by container writable layers (ImageFsInfo) as JSON."""
    client: Client = state.client()
    resp = client.call(client.images.ImageFsInfo, api.ImageFsInfoRequest())
    click.echo(output.dumps(output.message_dict(resp)))


def register(group: click.Group) -> None:
    group.add_command(image)


def encode_auth(user: str, password: str) -> str:
    """The `auth` form of credentials (for --auth)."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


__all__ = ["encode_auth", "register"]
