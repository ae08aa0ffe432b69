"""Images, crictl's way: pull, images (image, img), inspecti, rmi, imagefsinfo.

`crib image ...` (image.py) keeps crib's own spelling of the same calls plus import and prune.
"""

from __future__ import annotations

import re
from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import output
from crib.cli.client import Client, ClientError
from crib.cli.commands._common import (
    apply,
    client_of,
    echo_ids,
    for_each,
    output_option,
    parse_labels,
    show_statuses,
    status_options,
    template_option,
)
from crib.cli.timeparse import parse_duration

PULL_FLAGS = [
    click.option("--creds", envvar="CRICTL_CREDS", metavar="USERNAME[:PASSWORD]",
                 help="Credentials for the registry."),
    click.option("--auth", envvar="CRICTL_AUTH", metavar="AUTH_STRING",
                 help="Base64 of USERNAME[:PASSWORD], as in a docker config.json."),
    click.option("-u", "--username", default=None, help="Registry user; the password is asked for."),
    click.option("--pull-timeout", "--pt", "pull_timeout", envvar="CRICTL_PULL_TIMEOUT", metavar="DURATION",
                 default=None, help="Give up the pull after this long (0s: never)."),
]


def auth_config(creds: str | None, auth: str | None, username: str | None) -> dict[str, str]:
    """crictl's getAuth: --username (password prompted), --creds or --auth, as AuthConfig fields."""
    if username:
        return {"username": username, "password": click.prompt("Enter Password", hide_input=True, err=True)}
    if creds and auth:
        raise click.UsageError("both --creds and --auth are specified")
    if creds:
        user, _, password = creds.partition(":")
        if not user:
            raise click.BadParameter("username can't be empty", param_hint="--creds")
        return {"username": user, "password": password}
    return {"auth": auth} if auth else {}


def pull_image(client: Client, ref: str, auth: dict[str, str], *, timeout: float | None, quiet: bool,
               sandbox: Any = None, annotations: dict[str, str] | None = None) -> str:
    """Pull ref with live progress from crib, else with a plain CRI PullImage; returns the image ref."""
    from crib.cli.progress import pull_with_progress

    if not annotations:
        image_id = pull_with_progress(client, ref, auth, timeout=timeout, quiet=quiet)
        if image_id is not None:
            return image_id
    if not quiet:
        click.echo(f"{ref}: pulling (no progress from this runtime)", err=True)
    request = api.PullImageRequest(image=api.ImageSpec(image=ref, annotations=annotations or {}),
                                   auth=api.AuthConfig(**auth), sandbox_config=sandbox)
    return str(client.call("PullImage", request, timeout=timeout, image=True).image_ref)


@click.command()
@click.argument("ref", metavar="NAME[:TAG|@DIGEST]")
@click.option("--pod-config", default=None, metavar="pod-config.[json|yaml]",
              help="The pod the image is for (CRI sandbox_config).")
@click.option("-a", "--annotation", "annotations", multiple=True, metavar="KEY=VALUE",
              help="Annotation to be set on the pulled image.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@apply(PULL_FLAGS)
@click.pass_context
def pull(ctx: click.Context, ref: str, pod_config: str | None, annotations: tuple[str, ...], quiet: bool,
         creds: str | None, auth: str | None, username: str | None, pull_timeout: str | None) -> None:
    """Pull an image, with a live per-layer progress bar on a terminal."""
    from crib.cli.configs import load_pod_config

    client = client_of(ctx)
    timeout = parse_duration(pull_timeout) if pull_timeout else 0.0
    if timeout < 0:
        raise click.BadParameter("must not be negative", param_hint="--pull-timeout")
    sandbox = load_pod_config(pod_config) if pod_config else None
    image_ref = pull_image(client, ref, auth_config(creds, auth, username), timeout=timeout or None,
                           quiet=quiet, sandbox=sandbox,
                           annotations=parse_labels(annotations, "--annotation") or None)
    click.echo(f"Image is up to date for {image_ref}")


# ---------------------------------------------------------------------------------------------- list


def _sort_key(img: Any) -> tuple[int, str]:
    if img.repo_tags:
        return (0, img.repo_tags[0])
    if img.repo_digests:
        return (1, img.repo_digests[0])
    return (2, img.id)


def _matches_ref(img: Any, ref: str) -> bool:
    return ref in (img.id, *img.repo_tags, *img.repo_digests) or img.id.removeprefix("sha256:").startswith(
        ref.removeprefix("sha256:"))


def filter_images(images: list[Any], filters: tuple[str, ...]) -> list[Any]:
    """crictl's --filter: dangling=, reference=/regex/, before=, since= (images in list order)."""
    out = list(images)
    for spec in filters:
        key, sep, value = spec.partition("=")
        if not sep:
            raise click.BadParameter(f"{spec!r}: use key=value", param_hint="--filter")
        if key == "dangling":
            want = value.lower() == "true"
            out = [i for i in out if (not i.repo_tags) == want]
        elif key == "reference":
            try:
                regex = re.compile(value.strip("/"))
            except re.error as exc:
                raise click.BadParameter(f"{value!r}: {exc}", param_hint="--filter") from None
            out = [i for i in out if any(regex.search(t) for t in i.repo_tags)]
        elif key in ("before", "since"):
            pos = next((n for n, i in enumerate(out) if _matches_ref(i, value)), None)
            if pos is not None:  # no match keeps everything, as in crictl
                out = out[pos + 1:] if key == "before" else out[:pos]
        else:
            raise click.BadParameter(f"unknown filter {key!r}; use dangling, reference, before or since",
                                     param_hint="--filter")
    return out


def list_images(client: Client, ref: str = "", filters: tuple[str, ...] = ()) -> list[Any]:
    request = api.ListImagesRequest(filter=api.ImageFilter(image=api.ImageSpec(image=ref)))
    images = sorted(client.call("ListImages", request, image=True).images, key=_sort_key)
    return filter_images(images, filters)


def _repo_tag_pairs(img: Any) -> list[tuple[str, str]]:
    name = img.repo_digests[0].partition("@")[0] if img.repo_digests else "<none>"
    if not img.repo_tags:
        return [(name, "<none>")]
    pairs = []
    for tag in img.repo_tags:
        repo, sep, version = tag.rpartition(":")
        pairs.append((repo if repo != "<none>" else name, version) if sep
                     else ("errorRepoTag", "errorRepoTag"))
    return pairs


def print_images(images: list[Any], *, quiet: bool, verbose: bool, digests: bool, pinned: bool,
                 no_trunc: bool) -> None:
    if quiet:
        echo_ids(images)
        return
    if verbose:
        for img in images:
            click.echo(f"ID: {img.id}")
            for tag in img.repo_tags:
                click.echo(f"RepoTags: {tag}")
            for digest in img.repo_digests:
                click.echo(f"RepoDigests: {digest}")
            if img.size:
                click.echo(f"Size: {img.size}")
            if img.HasField("uid"):
                click.echo(f"Uid: value:{img.uid.value}")
            if img.username:
                click.echo(f"Username: {img.username}")
            if img.pinned:
                click.echo("Pinned: true")
            click.echo()
        return
    table = output.Table(["IMAGE", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "SIZE",
                          *(["PINNED"] if pinned else [])])
    for img in images:
        digest = img.repo_digests[0].partition("@")[2] if img.repo_digests else "<none>"
        ident = img.id
        if not no_trunc:
            ident, digest = output.truncate_id(ident, "sha256:"), output.truncate_id(digest, "sha256:")
        for repo, tag in _repo_tag_pairs(img):
            table.add([repo, tag, *([digest] if digests else []), ident, output.human_size(img.size, 3),
                       *(["true" if img.pinned else "false"] if pinned else [])])
    table.print()


@click.command()
@click.argument("ref", required=False, default="", metavar="[REPOSITORY[:TAG]]")
@click.option("-v", "--verbose", is_flag=True, help="Show verbose info for images.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="dangling=true|false, reference=/regex/, before=IMAGE, since=IMAGE (repeatable).")
@output_option()
@click.option("--digests", is_flag=True, help="Show digests.")
@click.option("--no-trunc", is_flag=True, help="Show output without truncating the ID.")
@click.option("--pinned", is_flag=True, help="Show whether the image is pinned.")
@click.pass_context
def images(ctx: click.Context, ref: str, verbose: bool, quiet: bool, filters: tuple[str, ...], fmt: str,
           digests: bool, no_trunc: bool, pinned: bool) -> None:
    """List images."""
    items = list_images(client_of(ctx), ref, filters)
    if fmt != "table":
        output.emit(output.message_dict(api.ListImagesResponse(images=items)), fmt)
        return
    print_images(items, quiet=quiet, verbose=verbose, digests=digests, pinned=pinned, no_trunc=no_trunc)


def image_status_doc(client: Client, ref: str, verbose: bool) -> tuple[Any, dict[str, Any]]:
    resp = client.call("ImageStatus", api.ImageStatusRequest(image=api.ImageSpec(image=ref), verbose=verbose),
                       image=True)
    if not resp.HasField("image"):
        raise ClientError(f"no such image {ref!r} present", code="NOT_FOUND")
    return resp, output.status_doc(output.message_dict(resp.image), resp.info)


@click.command()
@click.argument("ids", nargs=-1, metavar="[IMAGE-ID...]")
@status_options()
@click.option("--name", default="", help="Filter by image name.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE", help="As for `crib images`.")
@click.pass_context
def inspecti(ctx: click.Context, ids: tuple[str, ...], fmt: str, quiet: bool, template: str, name: str,
             filters: tuple[str, ...]) -> None:
    """Return the status of one or more images (all matching the filters when no id is given)."""
    client = client_of(ctx)
    targets = list(ids) or [i.id for i in list_images(client, name, filters)]
    if not targets:
        raise click.UsageError("no image ID given (and nothing matched the filters)")

    def table(pair: tuple[Any, dict[str, Any]]) -> None:
        resp = pair[0]
        click.echo(f"ID: {resp.image.id}")
        for tag in resp.image.repo_tags:
            click.echo(f"Tag: {tag}")
        for digest in resp.image.repo_digests:
            click.echo(f"Digest: {digest}")
        click.echo(f"Size: {output.human_size(resp.image.size, 3)}")
        if not quiet:
            click.echo(f"Info: {dict(resp.info)}")

    show_statuses(targets, lambda ref: image_status_doc(client, ref, not quiet), table, lambda pair: pair[1],
                  fmt, template)


@click.command()
@click.argument("ids", nargs=-1, metavar="[IMAGE-ID...]")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all images.")
@click.option("-q", "--prune", is_flag=True, help="Remove all images no container uses (pinned ones stay).")
@click.pass_context
def rmi(ctx: click.Context, ids: tuple[str, ...], all_: bool, prune: bool) -> None:
    """Remove one or more images; prints every name removed (CRI removes all of an image's tags)."""
    client = client_of(ctx)
    targets = dict.fromkeys(ids, True)
    if all_ or prune:
        for img in client.call("ListImages", api.ListImagesRequest(), image=True).images:
            if not (prune and img.pinned):
                targets[img.id] = True
    if prune:
        for c in client.call("ListContainers", api.ListContainersRequest()).containers:
            spec = api.ImageSpec(image=c.image.image)
            resp = client.call("ImageStatus", api.ImageStatusRequest(image=spec), image=True)
            if resp.HasField("image"):
                targets[resp.image.id] = False
    chosen = [ref for ref, keep in targets.items() if keep]
    if not chosen:
        if all_ or prune:
            click.echo("No images to remove", err=True)
            return
        raise click.UsageError("no image ID given")

    def remove(ref: str) -> None:
        resp = client.call("ImageStatus", api.ImageStatusRequest(image=api.ImageSpec(image=ref)), image=True)
        if not resp.HasField("image"):
            raise ClientError(f"no such image {ref}", code="NOT_FOUND")
        try:
            client.call("RemoveImage", api.RemoveImageRequest(image=api.ImageSpec(image=ref)), image=True)
        except ClientError:
            if prune:
                return  # in use after all, or gone meanwhile: prune races, as crictl's does
            raise
        for name in resp.image.repo_tags or resp.image.repo_digests:
            click.echo(f"Deleted: {name}")

    for_each(chosen, remove)


@click.command()
@output_option(default="json", choices=output.STATUS_FORMATS)
@template_option()
@click.pass_context
def imagefsinfo(ctx: click.Context, fmt: str, template: str) -> None:
    """Return the image and container filesystems' usage (CRI ImageFsInfo)."""
    resp = client_of(ctx).call("ImageFsInfo", api.ImageFsInfoRequest(), image=True)
    if fmt != "table":
        output.emit(output.message_dict(resp), fmt, template)
        return
    for label, filesystems in (("Container", resp.container_filesystems), ("Image", resp.image_filesystems)):
        click.echo(f"{label} Filesystem ")
        for i, fs in enumerate(filesystems):
            click.echo(f"TimeStamp[{i}]: {fs.timestamp}\nDisk[{i}]: {output.human_size(fs.used_bytes.value)}")
            click.echo(f"Inodes[{i}]: {fs.inodes_used.value}\nMountpoint[{i}]: {fs.fs_id.mountpoint}")


__all__ = ["PULL_FLAGS", "auth_config", "filter_images", "image_status_doc", "imagefsinfo", "images",
           "inspecti", "list_images", "print_images", "pull", "pull_image", "rmi"]
