"""The image service: what the CRI ImageService, the container lifecycle and the CLI call.

`resolve` and `layer_dirs` are the contract with the container lifecycle (it turns an image into an
overlay root filesystem); `set_users` lets it tell which containers use an image, so RemoveImage can
refuse while any does. Everything else backs one CRI call or one `crib image` command.

How a reference is looked up (ImageStatus, RemoveImage, CreateContainer): a full id (`sha256:<hex>`);
else the normalized name (`busybox` -> `docker.io/library/busybox:latest`, `name@digest` for digests);
else, if it is hex, a unique id prefix (crictl prints ids truncated). RemoveImage removes the image with
all its names, as containerd does; removing what is already gone succeeds.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import typing
from dataclasses import dataclass
from pathlib import Path

from crib import log
from crib.config import Config
from crib.errors import FailedPrecondition, InvalidArgument, NotFound
from crib.images import reference, registries_conf
from crib.images.auth import Credentials, DockerConfig
from crib.images.blobs import ContentStore
from crib.images.gc import Collector, GcResult
from crib.images.importer import ImportResult, import_path
from crib.images.layers import LayerStore, clean_tmp
from crib.images.pipeline import Pipeline
from crib.images.progress import PullProgress, run_with_watchdog
from crib.images.pull import Puller
from crib.images.registry import RegistryClient
from crib.images.store import ImageStore
from crib.metrics import ops
from crib.state import Database
from crib.state.records import ImageRecord

if typing.TYPE_CHECKING:
    import httpx

_log = log.get(__name__)

_HEX_RE = re.compile(r"[0-9a-f]{1,64}\Z")


class ImageUsers(typing.Protocol):
    """Implemented by the container service: which containers use an image (ids or names)."""

    def containers_using(self, image_id: str) -> list[str]: ...


class _NoUsers:
    def containers_using(self, image_id: str) -> list[str]:
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class FsUsage:
    """One filesystem's use by crib, as ImageFsInfo reports it."""

    mountpoint: str
    used_bytes: int
    inodes_used: int
    timestamp_ns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FsInfo:
    images: FsUsage
    containers: FsUsage


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult:
    removed_images: tuple[str, ...]
    gc: GcResult


def _du(path: Path) -> tuple[int, int]:
    """(bytes in allocated blocks, inodes) of a tree, each hard-linked inode counted once."""
    seen: set[tuple[int, int]] = set()
    used = inodes = 0
    stack = [str(path)]
    while stack:
        top = stack.pop()
        try:
            with os.scandir(top) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                    inodes += 1
                    used += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
    return used, inodes


class _Reloading:
    """A config file re-read when it (or its drop-in directory) changes: operators edit it live."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sig: tuple[object, ...] | None = None
        self.value = registries_conf.load(path)  # a broken file stops the daemon's start

    def _signature(self) -> tuple[object, ...]:
        sig: list[object] = []
        main = Path(self.path)
        for p in (main, main.parent / registries_conf.DROP_IN_DIR):
            try:
                st = p.stat()
                sig.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                sig.append(None)
        drop = main.parent / registries_conf.DROP_IN_DIR
        if drop.is_dir():
            for f in sorted(drop.glob("*.conf")):
                st = f.stat()
                sig.append((f.name, st.st_mtime_ns, st.st_size))
        return tuple(sig)

    def get(self) -> registries_conf.RegistriesConf:
        sig = self._signature()
        if sig != self._sig:
            self.value = registries_conf.load(self.path)
            self._sig = sig
        return self.value


class ImageService:
    """See the module note."""

    def __init__(self, cfg: Config, db: Database, *, transport: httpx.AsyncBaseTransport | None = None,
                 retry_base: float = 0.25) -> None:
        root = Path(cfg.root)
        self._cfg = cfg.image
        self.content = ContentStore(root)
        self.layers = LayerStore(root)
        self.store = ImageStore(db)
        self.containers_dir = root / "containers"
        self.pipeline = Pipeline(content=self.content, layers=self.layers, store=self.store,
                                 concurrency=cfg.image.max_concurrent_downloads,
                                 max_layer_bytes=cfg.image.max_layer_bytes)
        self.collector = Collector(self.store, self.content, self.layers)
        self.pipeline.on_failure = self._collect_only
        self._conf = _Reloading(cfg.image.registries_conf)
        DockerConfig.load(cfg.image.auth_file)  # a broken file stops the start, not the first pull
        self.registry = RegistryClient(
            certs_dir=cfg.image.certs_dir, read_timeout=float(cfg.image.pull_progress_timeout) or 300.0,
            transport=transport, retry_base=retry_base)
        self._users: ImageUsers = _NoUsers()
        self._pinned_ids, self._pinned_names = self._parse_pinned(cfg.image.pinned_images)

    @staticmethod
    def _parse_pinned(entries: list[str]) -> tuple[set[str], set[str]]:
        ids: set[str] = set()
        names: set[str] = set()
        for entry in entries:
            if entry.startswith(("sha256:", "sha512:")):
                ids.add(entry)
                continue
            ref = reference.parse(entry)
            names.add(ref.digested if ref.digest else ref.tagged)
        return ids, names

    async def start(self) -> None:
        """Start-up repair: drop a killed daemon's temporary files, then collect unreferenced content."""
        removed = await asyncio.to_thread(clean_tmp, self.content.tmp)
        if removed:
            log.event(_log, 20, "removed leftovers of interrupted pulls", entries=removed)
        await self.collector.collect(self.pipeline.leases, self.pipeline.gc_lock)

    async def close(self) -> None:
        await self.registry.aclose()
        await asyncio.to_thread(self.pipeline.close)

    async def _collect_only(self, keys: list[str]) -> GcResult:
        return await self.collector.collect(self.pipeline.leases, self.pipeline.gc_lock, only=keys)

    # ------------------------------------------------------------------------------- the runtime's API

    def set_users(self, users: ImageUsers) -> None:
        self._users = users

    def find(self, ref: str) -> ImageRecord | None:
        """The image ref names (see the module note), or None.

        Raises:
            InvalidArgument: ref is neither a reference nor an id; or an ambiguous id prefix.
        """
        text = ref.strip()
        if not text:
            raise InvalidArgument("the image reference is empty")
        algorithm, colon, hexpart = text.partition(":")
        if colon and algorithm in reference.DIGEST_HEX_LENGTHS and "/" not in text:
            if len(hexpart) == reference.DIGEST_HEX_LENGTHS[algorithm]:
                reference.check_digest(text, what="image id")
                return self.store.get(text)
            if not _HEX_RE.match(hexpart):
                raise InvalidArgument(f"image id {text!r} is not {algorithm}:<hex>")
            return self._by_prefix(hexpart)
        parsed: reference.Reference | None = None
        error: InvalidArgument | None = None
        try:
            parsed = reference.parse(text)
        except InvalidArgument as exc:
            error = exc
        if parsed is not None:
            rec = self.store.by_name(parsed.digested if parsed.digest else parsed.tagged)
            if rec is not None:
                return rec
        if _HEX_RE.match(text):
            # A bare hex string names an id (or id prefix): absent means no image, not a bad reference,
            # so RemoveImage of a gone id succeeds and ImageStatus answers empty, as CRI requires.
            return self._by_prefix(text)
        if error is not None:
            raise error
        return None

    def _by_prefix(self, prefix: str) -> ImageRecord | None:
        matches = self.store.by_id_prefix(prefix)
        if len(matches) > 1:
            raise InvalidArgument(f"image id prefix {prefix!r} matches {len(matches)} images; give more of "
                                  "the id")
        return matches[0] if matches else None

    def resolve(self, ref: str) -> ImageRecord:
        """The image ref names.

        Raises:
            NotFound: no such image (the message names ref).
            InvalidArgument: ref is not a reference or id.
        """
        rec = self.find(ref)
        if rec is None:
            raise NotFound(f"image {ref!r} not found; pull it first (crictl pull / crib image pull {ref})")
        return rec

    def layer_dirs(self, image: ImageRecord) -> list[Path]:
        """The image's unpacked layer directories, lowest first.

        Raises:
            FailedPrecondition: a layer directory is missing (the store was damaged; pull the image again).
        """
        dirs = [self.layers.path(layer.chain_id) for layer in image.layers]
        for layer, d in zip(image.layers, dirs, strict=True):
            if not d.is_dir():
                raise FailedPrecondition(f"image {image.id}: layer {layer.digest} is missing from {d}; "
                                         "remove "
                                         "the image and pull it again")
        return dirs

    async def inspect(self, image: ImageRecord) -> dict[str, object]:
        """Everything crib knows about an image, as plain data (verbose ImageStatus, `crib image status`)."""
        try:
            spec: object = json.loads(await asyncio.to_thread(self.content.read, image.id))
        except (FileNotFoundError, ValueError):
            spec = None
        return {
            "id": image.id, "repoTags": list(image.repo_tags), "repoDigests": list(image.repo_digests),
            "size": image.size, "pinned": self.is_pinned(image), "created": image.created,
            "pulledAt": image.pulled_at, "manifestDigest": image.manifest_digest,
            "manifestMediaType": image.manifest_media_type,
            "chainIDs": [layer.chain_id for layer in image.layers],
            "layers": [{"digest": layer.digest, "diffID": layer.diff_id, "chainID": layer.chain_id,
                        "size": layer.size, "mediaType": layer.media_type,
                        "dir": str(self.layers.path(layer.chain_id))} for layer in image.layers],
            "imageSpec": spec,
        }

    def is_pinned(self, image: ImageRecord) -> bool:
        return image.id in self._pinned_ids or any(
            n in self._pinned_names for n in (*image.repo_tags, *image.repo_digests))

    # ------------------------------------------------------------------------------------------ CRI calls

    def list(self, ref: str = "") -> list[ImageRecord]:
        """Every image, or the one ref names (none when it names nothing)."""
        if ref:
            rec = self.find(ref)
            return [rec] if rec is not None else []
        return sorted(self.store.all(), key=lambda r: r.id)

    async def pull(self, ref: str, credentials: Credentials | None = None, *,
                   progress: PullProgress | None = None, pod: str = "") -> ImageRecord:
        """Pull ref from its registry (or a mirror); returns the stored record.

        Raises:
            InvalidArgument: a bad reference.
            Unauthenticated / PermissionDenied: the registry wants or refused credentials; a blocked registry.
            NotFound: no such image (or none for this platform).
            Unavailable: the registry is unreachable; DeadlineExceeded: the pull stalled.
            ContentError / UnsafeLayer / BadImage: the registry served something unusable.
        """
        parsed = reference.parse(ref)
        progress = progress or PullProgress()
        progress.ref = str(parsed)
        conf = self._conf.get()
        docker_config = DockerConfig.load(self._cfg.auth_file)
        puller = Puller(pipeline=self.pipeline, registry=self.registry, conf=conf,
                        docker_config=docker_config)
        started = time.monotonic()
        log.event(_log, 20, "pulling image", ref=str(parsed), pod=pod or None,
                  auth=credentials.describe() if credentials else None)
        try:
            record = await run_with_watchdog(puller.pull(parsed, credentials, progress), progress,
                                             float(self._cfg.pull_progress_timeout), f"pull of {parsed}")
        except asyncio.CancelledError:
            ops.COUNTERS.image_pull("cancelled")
            raise
        except Exception:
            ops.COUNTERS.image_pull("failure")
            raise
        ops.COUNTERS.image_pull("success")
        log.event(_log, 20, "pulled image", ref=str(parsed), id=record.id, size=record.size,
                  layers=len(record.layers), duration_s=round(time.monotonic() - started, 3))
        return record

    async def remove(self, ref: str) -> ImageRecord | None:
        """Remove the image ref names, with all its names; None when there was none.

        Raises:
            FailedPrecondition: containers use the image (they are named).
        """
        rec = self.find(ref)
        if rec is None:
            return None
        users = self._users.containers_using(rec.id)
        if users:
            names = ", ".join(rec.repo_tags or rec.repo_digests) or "no names"
            raise FailedPrecondition(f"image {rec.id} ({names}) is used by container(s) {', '.join(users)}; "
                                     "remove those containers first")
        if self.store.delete(rec.id) is not None:
            log.event(_log, 20, "removed image", id=rec.id, names=list(rec.repo_tags) or None)
            await self.collector.collect(self.pipeline.leases, self.pipeline.gc_lock)
        return rec

    async def fs_info(self) -> FsInfo:
        """Bytes and inodes of the image store and of containers' writable layers."""
        now = time.time_ns()
        usage = self.store.layer_usage()
        on_disk = set(self.layers.chain_ids())

        def blobs() -> tuple[int, int]:
            return _du(self.content.dir)

        blob_bytes, blob_inodes = await asyncio.to_thread(blobs)
        layer_bytes = sum(u[1] for c, u in usage.items() if c in on_disk)
        layer_inodes = sum(u[0] for c, u in usage.items() if c in on_disk)
        cont_bytes, cont_inodes = await asyncio.to_thread(_du, self.containers_dir)
        return FsInfo(
            images=FsUsage(mountpoint=str(self.layers.dir), used_bytes=layer_bytes + blob_bytes,
                           inodes_used=layer_inodes + blob_inodes, timestamp_ns=now),
            containers=FsUsage(mountpoint=str(self.containers_dir), used_bytes=cont_bytes,
                               inodes_used=cont_inodes, timestamp_ns=now),
        )

    # ------------------------------------------------------------------------------------- crib's own

    async def import_archive(self, path: str, *, base_name: str = "",
                             progress: PullProgress | None = None) -> ImportResult:
        """Load an OCI layout (directory or tar) or a docker-archive tar from this node's filesystem."""
        result = await import_path(self.pipeline, Path(path), base_name=base_name, progress=progress)
        for rec in result.records:
            log.event(_log, 20, "imported image", path=path, id=rec.id, names=list(rec.repo_tags) or None)
        return result

    async def prune(self, *, all_unused: bool = False) -> PruneResult:
        """Collect unreferenced content; with all_unused, first remove unpinned images no container uses."""
        removed: list[str] = []
        if all_unused:
            for rec in self.store.all():
                if self.is_pinned(rec) or self._users.containers_using(rec.id):
                    continue
                if self.store.delete(rec.id) is not None:
                    removed.append(rec.id)
        result = await self.collector.collect(self.pipeline.leases, self.pipeline.gc_lock)
        return PruneResult(removed_images=tuple(removed), gc=result)


__all__ = ["FsInfo", "FsUsage", "ImageService", "ImageUsers", "PruneResult"]
