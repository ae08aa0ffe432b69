"""`crib image pull|list|status|rm|import|prune|fsinfo`: the image store, from the command line.

pull, list, status, rm and fsinfo are CRI calls and work against any runtime. pull shows progress when
the runtime is crib (crib's extension streams it) and falls back to a plain CRI PullImage otherwise.
import and prune exist only in crib (CRI has no such calls).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output
from crib.cli.client import Client, ClientError
from crib.cli.commands import images as images_mod
from crib.cli.commands.images import auth_config, pull_image

EXT_SERVICE = "crib.images.v1.Images"  # mirrors crib.cri.image_servicer.EXT_SERVICE


def _ext_unary(client: Client, method: str, request: dict[str, Any]) -> dict[str, Any]:
    """One call of crib's image extension (JSON over gRPC), without deadline (imports take a while)."""
    import grpc

    call = client.channel(client.endpoints.image).unary_unary(
        f"/{EXT_SERVICE}/{method}", request_serializer=lambda d: json.dumps(d).encode(),
        response_deserializer=json.loads)
    try:
        result: dict[str, Any] = call(request, timeout=None)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise ClientError(f"crib image {method.lower()} is a crib extension; the runtime at "
                              f"{client.endpoints.image} does not offer it", code="UNIMPLEMENTED") from None
        raise client.error(exc, None) from None
    return result


@click.group("image", invoke_without_command=True)
@click.pass_context
def image(ctx: click.Context) -> None:
    """Pull, list, inspect and remove images (CRI ImageService), import archives, prune.

    Alone, `crib image` lists images, as crictl's `image` alias of `images` does.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(images_mod.images)


@image.command("pull")
@click.argument("ref")
@click.option("--creds", metavar="USER:PASSWORD", help="Registry credentials.")
@click.option("--auth", metavar="BASE64", help="Base64 of USER:PASSWORD, as in a docker config.json.")
@click.option("--identity-token", metavar="TOKEN", help="An OAuth2 refresh token for the registry.")
@click.option("--registry-token", metavar="TOKEN", help="A bearer token for the registry.")
@click.option("--pull-timeout", type=float, default=0.0, show_default=True,
              help="Give up after this many seconds (0: wait; the runtime cancels a stalled pull itself).")
@click.option("-q", "--quiet", is_flag=True, help="No progress.")
@click.pass_obj
def pull(state: Any, ref: str, creds: str | None, auth: str | None, identity_token: str | None,
         registry_token: str | None, pull_timeout: float, quiet: bool) -> None:
    """Pull an image, showing progress; prints its id."""
    client: Client = state.client()
    auth_doc = auth_config(creds, auth, None)
    auth_doc.update({k: v for k, v in (("identity_token", identity_token),
                                       ("registry_token", registry_token)) if v})
    started = time.monotonic()
    image_id = pull_image(client, ref, auth_doc, timeout=pull_timeout or None, quiet=quiet)
    click.echo(f"Image is up to date for {image_id}")
    if not quiet:
        click.echo(f"pulled {ref} in {time.monotonic() - started:.1f}s", err=True)


@image.command("list")
@click.argument("filter_ref", required=False, default="")
@click.option("-q", "--quiet", is_flag=True, help="Only image ids.")
@click.option("-o", "--output", "fmt", type=click.Choice(list(output.FORMATS)), default="table",
              show_default=True)
@click.option("--digests", is_flag=True, help="Show repo digests.")
@click.pass_obj
def list_images(state: Any, filter_ref: str, quiet: bool, fmt: str, digests: bool) -> None:
    """List images (optionally only the one FILTER_REF names); `crib images --pinned` in short."""
    items = images_mod.list_images(state.client(), filter_ref)
    if fmt != "table":
        output.emit(output.message_dict(api.ListImagesResponse(images=items)), fmt)
        return
    images_mod.print_images(items, quiet=quiet, verbose=False, digests=digests, pinned=True, no_trunc=False)


@image.command("status")
@click.argument("ref")
@click.pass_obj
def status(state: Any, ref: str) -> None:
    """An image's status and verbose info as JSON (exit 1 when absent)."""
    try:
        _, doc = images_mod.image_status_doc(state.client(), ref, True)
    except ClientError as exc:
        if exc.code != "NOT_FOUND":
            raise
        raise ClientError(f"image {ref!r} not found") from None
    click.echo(output.dumps(doc))


@image.command("rm")
@click.argument("refs", nargs=-1, required=True)
@click.pass_obj
def remove(state: Any, refs: tuple[str, ...]) -> None:
    """Remove images (by id, tag or digest); removing an absent one succeeds."""
    client: Client = state.client()
    for ref in refs:
        client.call("RemoveImage", api.RemoveImageRequest(image=api.ImageSpec(image=ref)), image=True)
        click.echo(f"Deleted: {ref}")


@image.command("import")
@click.argument("path", type=click.Path(exists=True))
@click.option("--name", default="", metavar="REPOSITORY",
              help="Repository for OCI layout entries whose ref name is only a tag.")
@click.pass_obj
def import_(state: Any, path: str, name: str) -> None:
    """Load an OCI layout (directory or tar) or a docker-archive tar (docker save) into crib."""
    client: Client = state.client()
    result = _ext_unary(client, "Import", {"path": os.path.abspath(path), "name": name})
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
    result = _ext_unary(client, "Prune", {"all": all_unused})
    for image_id in result.get("removed_images", []):
        click.echo(f"Deleted: {image_id}")
    click.echo(f"freed {output.human_size(result.get('bytes_freed', 0), 3)} ({result.get('blobs', 0)} blobs, "
               f"{result.get('layers', 0)} layers)")


@image.command("fsinfo")
@click.pass_obj
def fsinfo(state: Any) -> None:
    """Bytes and inodes used by images and by container writable layers (ImageFsInfo) as JSON."""
    client: Client = state.client()
    resp = client.call("ImageFsInfo", api.ImageFsInfoRequest(), image=True)
    click.echo(output.dumps(output.message_dict(resp)))


__all__ = ["image"]
