"""ImageService: validate, make one domain call, convert the result.

Also crib's own image extension, `crib.images.v1.Images` (Pull with progress, Import, Prune), served on
the same socket for `crib image ...`. CRI has no progress, import or prune calls; the extension speaks
JSON documents over gRPC (a generic handler with JSON (de)serializers) so it needs no second .proto.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cri import wire
from crib.cri.chunks import chunked
from crib.cri.h2server import Context, Method
from crib.cri.server import fill_unimplemented
from crib.errors import InvalidArgument
from crib.images import Credentials, ImageService, PullProgress
from crib.images.auth import from_fields
from crib.images.manifest import user_of
from crib.state.records import ImageRecord

EXT_SERVICE = "crib.images.v1.Images"
EXT_PULL = f"/{EXT_SERVICE}/Pull"
EXT_IMPORT = f"/{EXT_SERVICE}/Import"
EXT_PRUNE = f"/{EXT_SERVICE}/Prune"
PROGRESS_INTERVAL = 0.25


def _spec_image(spec: Any, rpc: str) -> str:
    image = spec.image.strip() if spec is not None else ""
    if not image:
        raise InvalidArgument(f"{rpc}: image.image is empty; name an image (\"busybox\", an id, or "
                              "name@digest)")
    return str(image)


def credentials(auth: Any) -> Credentials | None:
    """The request's AuthConfig as crib's Credentials (None when empty)."""
    return from_fields(username=auth.username, password=auth.password, auth=auth.auth,
                       identity_token=auth.identity_token, registry_token=auth.registry_token,
                       source="the pull request's auth")


def to_image(rec: ImageRecord, *, pinned: bool) -> Any:
    uid, username = user_of(rec.config)
    image = api.Image(id=rec.id, repo_tags=list(rec.repo_tags), repo_digests=list(rec.repo_digests),
                      size=rec.size, username=username, spec=api.ImageSpec(image=rec.id), pinned=pinned)
    if uid is not None:
        image.uid.value = uid
    return image


def _fs_usage(usage: Any) -> Any:
    return api.FilesystemUsage(timestamp=usage.timestamp_ns,
                               fs_id=api.FilesystemIdentifier(mountpoint=usage.mountpoint),
                               used_bytes=api.UInt64Value(value=usage.used_bytes),
                               inodes_used=api.UInt64Value(value=usage.inodes_used))


@fill_unimplemented("ImageService")
class ImageServicer:
    def __init__(self, images: ImageService) -> None:
        self._images = images
        self._pinned: wire.Cache[ImageRecord] = wire.Cache(functools.partial(to_image, pinned=True))
        self._unpinned: wire.Cache[ImageRecord] = wire.Cache(functools.partial(to_image, pinned=False))

    def _image(self, rec: ImageRecord) -> Any:
        return to_image(rec, pinned=self._images.is_pinned(rec))

    def _image_bytes(self, rec: ImageRecord) -> bytes:
        """The serialized Image of rec, cached while rec is the same record (cri/wire.py)."""
        pinned = self._images.is_pinned(rec)
        return (self._pinned if pinned else self._unpinned).get(rec.id, rec)

    async def PullImage(self, request: api.PullImageRequest, context: Context) -> Any:
        ref = _spec_image(request.image, "PullImage")
        creds = credentials(request.auth) if request.HasField("auth") else None
        pod = ""
        if request.HasField("sandbox_config"):
            md = request.sandbox_config.metadata
            pod = f"{md.namespace}/{md.name}" if md.name else ""
        rec = await self._images.pull(ref, creds, pod=pod)
        return api.PullImageResponse(image_ref=rec.id)

    async def ListImages(self, request: api.ListImagesRequest, context: Context) -> Any:
        ref = request.filter.image.image if request.HasField("filter") else ""
        records = self._images.list(ref)
        out = wire.repeated(1, [self._image_bytes(r) for r in records])
        if not ref:
            self._pinned.keep_only(r.id for r in records)
            self._unpinned.keep_only(r.id for r in records)
        return out

    async def StreamImages(self, request: api.StreamImagesRequest,
                           context: Context) -> AsyncIterator[Any]:
        ref = request.filter.image.image if request.HasField("filter") else ""
        for batch in chunked(self._image(r) for r in self._images.list(ref)):
            yield api.StreamImagesResponse(images=batch)

    async def ImageStatus(self, request: api.ImageStatusRequest, context: Context) -> Any:
        rec = self._images.find(_spec_image(request.image, "ImageStatus"))
        if rec is None:
            return api.ImageStatusResponse()  # absent: no image and no error, as CRI requires
        if not request.verbose:
            return wire.field(1, self._image_bytes(rec))
        info = {"info": json.dumps(await self._images.inspect(rec))}
        return api.ImageStatusResponse(image=self._image(rec), info=info)

    async def RemoveImage(self, request: api.RemoveImageRequest, context: Context) -> Any:
        await self._images.remove(_spec_image(request.image, "RemoveImage"))
        return api.RemoveImageResponse()

    async def ImageFsInfo(self, request: api.ImageFsInfoRequest, context: Context) -> Any:
        fs = await self._images.fs_info()
        return api.ImageFsInfoResponse(image_filesystems=[_fs_usage(fs.images)],
                                       container_filesystems=[_fs_usage(fs.containers)])


# ------------------------------------------------------------------------------------------ extension


def _decode(data: bytes) -> dict[str, Any]:
    doc = json.loads(data or b"{}")
    if not isinstance(doc, dict):
        raise InvalidArgument("the request must be a JSON object")
    return doc


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _summary(rec: ImageRecord) -> dict[str, Any]:
    return {"id": rec.id, "repo_tags": list(rec.repo_tags), "repo_digests": list(rec.repo_digests),
            "size": rec.size}


class ImageExtServicer:
    """crib's own image calls (see the module note); requests and answers are JSON objects."""

    def __init__(self, images: ImageService) -> None:
        self._images = images
        self._pinned: wire.Cache[ImageRecord] = wire.Cache(functools.partial(to_image, pinned=True))
        self._unpinned: wire.Cache[ImageRecord] = wire.Cache(functools.partial(to_image, pinned=False))

    async def Pull(self, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
        ref = str(request.get("image", "")).strip()
        if not ref:
            raise InvalidArgument("Pull: \"image\" is empty")
        auth = request.get("auth") or {}
        creds = from_fields(username=str(auth.get("username", "")), password=str(auth.get("password", "")),
                            auth=str(auth.get("auth", "")),
                            identity_token=str(auth.get("identity_token", "")),
                            registry_token=str(auth.get("registry_token", "")), source="--creds/--auth")
        progress = PullProgress()
        task = asyncio.ensure_future(self._images.pull(ref, creds, progress=progress))
        try:
            last: dict[str, Any] | None = None
            while not task.done():
                await asyncio.wait({task}, timeout=PROGRESS_INTERVAL)
                snap = progress.snapshot()
                if snap != last and not task.done():
                    last = snap
                    yield {"progress": snap, "transfers": progress.layer_snapshot()}
            rec = task.result()
        finally:
            if not task.done():
                task.cancel()
        yield {"progress": progress.snapshot(), "transfers": progress.layer_snapshot(),
               "image": _summary(rec)}

    async def Import(self, request: dict[str, Any], context: Context) -> Any:
        path = str(request.get("path", "")).strip()
        if not path:
            raise InvalidArgument("Import: \"path\" is empty")
        result = await self._images.import_archive(path, base_name=str(request.get("name", "")))
        return {"images": [_summary(r) for r in result.records], "notes": list(result.notes)}

    async def Prune(self, request: dict[str, Any], context: Context) -> Any:
        result = await self._images.prune(all_unused=bool(request.get("all", False)))
        return {"removed_images": list(result.removed_images), "blobs": result.gc.blobs,
                "layers": result.gc.layers, "bytes_freed": result.gc.bytes_freed}


def ext_handlers(servicer: ImageExtServicer) -> dict[str, Method]:
    """The extension's methods, for cri.server.add_service(server, EXT_SERVICE, ...)."""
    return {
        "Pull": Method(handler=servicer.Pull, deserialize=_decode, serialize=_encode, streaming=True),
        "Import": Method(handler=servicer.Import, deserialize=_decode, serialize=_encode),
        "Prune": Method(handler=servicer.Prune, deserialize=_decode, serialize=_encode),
    }


__all__ = ["EXT_IMPORT", "EXT_PRUNE", "EXT_PULL", "ImageExtServicer", "ImageServicer", "credentials",
           "ext_handlers", "to_image"]
