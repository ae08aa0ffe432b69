"""Offline import: an OCI image layout (directory or tar) or a docker-archive tar, without any registry.

For air-gapped nodes and demos: `crib image import PATH`. The archive is read in place (a tar's members
are streamed, never extracted to disk first) and goes through the same pipeline as a pull, so digests are
verified and layers are unpacked by the same hardened code.

Names. An OCI layout names its manifests with annotations: `io.containerd.image.name` (a full reference,
as `ctr export` writes) wins; `org.opencontainers.image.ref.name` is used as a full reference when it is
one, and as a tag of `--name` (the base name) otherwise. A docker-archive names its images in
`RepoTags`. An image with no usable name is imported untagged and is reachable by its id.
A docker-archive has no manifest: crib writes a Docker schema 2 manifest for it (so the image has a
manifest digest like any other); its layers are hashed first since the archive gives only diff_ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crib import lazy
from crib.errors import CribError, InvalidArgument, NotFound

if TYPE_CHECKING:
    import tarfile
else:
    tarfile = lazy.module("tarfile")  # loaded by the first import (daemon idle memory)
from crib.images import reference
from crib.images.blobs import digest_of
from crib.images.manifest import (
    INDEX_TYPES,
    MT_DOCKER_CONFIG,
    MT_DOCKER_MANIFEST,
    media_type_of,
    parse_index,
    parse_manifest,
    select_platform,
)
from crib.images.pipeline import Pipeline
from crib.images.progress import PullProgress
from crib.images.pull import Resolved, fetch_image
from crib.images.reference import Reference, check_digest
from crib.images.sources import BlobSource, FileSource, TarMemberSource
from crib.images.streams import CHUNK
from crib.state.records import ImageRecord

ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MAX_INDEX_BYTES = 4 << 20


class ArchiveError(CribError):
    """The archive is not an OCI layout or a docker-archive, or is inconsistent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    """One image to import: where its manifest comes from and what it is called."""

    resolved: Resolved
    ref: Reference | None
    names: tuple[str, ...]


def _name_for(annotations: dict[str, str] | None, base: str) -> tuple[Reference | None, str]:
    """(reference, note) for an OCI layout entry (see the module note)."""
    ann = annotations or {}
    full = ann.get(ANNOTATION_CONTAINERD_NAME, "")
    candidate = full or ann.get(ANNOTATION_REF_NAME, "")
    if not candidate:
        return None, ""
    if full or "/" in candidate or (":" in candidate and not base):
        try:
            return reference.parse(candidate), ""
        except InvalidArgument:
            if full:
                raise
    if base:
        try:
            return reference.parse(f"{base}:{candidate}"), ""
        except InvalidArgument as exc:
            raise InvalidArgument(f"--name {base!r} with the layout's ref name {candidate!r}: {exc}") from exc
    return None, (f"ref name {candidate!r} is only a tag; pass --name REPOSITORY to import it as "
                  f"REPOSITORY:{candidate}")


class _Layout:
    """Reads an OCI layout from a directory or from a tar's members."""

    def __init__(self, path: Path, members: dict[str, str] | None) -> None:
        self.path = path
        self.members = members  # None: a directory; else digest -> member name

    def source(self) -> BlobSource:
        if self.members is None:
            return FileSource(f"OCI layout {self.path}", self._blob_path)
        return TarMemberSource(f"OCI layout {self.path}", self.path, self.members)

    def _blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = check_digest(digest).partition(":")
        p = self.path / "blobs" / algorithm / hexpart
        if not p.is_file():
            raise NotFound(f"OCI layout {self.path}: blob {digest} is missing (blobs/{algorithm}/{hexpart})")
        return p

    def read(self, digest: str, limit: int) -> bytes:
        if self.members is None:
            data = self._blob_path(digest).read_bytes()
        else:
            if digest not in self.members:
                raise NotFound(f"OCI layout {self.path}: blob {digest} is missing")
            data = _read_member(self.path, self.members[digest], limit)
        if len(data) > limit:
            raise ArchiveError(f"OCI layout {self.path}: {digest} is larger than {limit} bytes")
        got = digest_of(data, digest.split(":", 1)[0])
        if got != digest:
            raise ArchiveError(f"OCI layout {self.path}: blob {digest} hashes to {got}")
        return data

    def index(self) -> dict[str, Any]:
        if self.members is None:
            raw = (self.path / "index.json").read_bytes()
        else:
            raw = _read_member(self.path, "index.json", MAX_INDEX_BYTES)
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ArchiveError(f"OCI layout {self.path}: index.json is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ArchiveError(f"OCI layout {self.path}: index.json is not a JSON object")
        return doc


def _read_member(archive: Path, name: str, limit: int) -> bytes:
    with tarfile.open(archive, "r:") as tar:
        try:
            fh = tar.extractfile(name)
        except KeyError:
            raise NotFound(f"{archive}: no member {name!r}") from None
        if fh is None:
            raise ArchiveError(f"{archive}: member {name!r} is not a file")
        return fh.read(limit + 1)


def _tar_members(archive: Path) -> dict[str, tarfile.TarInfo]:
    try:
        with tarfile.open(archive, "r:") as tar:
            return {m.name.removeprefix("./"): m for m in tar.getmembers()}
    except tarfile.TarError as exc:
        raise InvalidArgument(f"{archive} is not an uncompressed tar archive ({exc}); crib imports OCI "
                              "layouts "
                              "(directory or tar) and docker-archive tars") from exc


def _layout_entries(layout: _Layout, base: str) -> tuple[list[_Entry], list[str]]:
    doc = layout.index()
    entries = parse_index(json.dumps(doc).encode(), f"OCI layout {layout.path} index.json")
    out: list[_Entry] = []
    notes: list[str] = []
    for desc in entries:
        what = f"OCI layout {layout.path}: {desc.digest}"
        ref, note = _name_for(desc.annotations, base)
        if note:
            notes.append(note)
        top = layout.read(desc.digest, MAX_INDEX_BYTES)
        top_type = media_type_of(top, desc.media_type, what)
        data, mtype, mdigest = top, top_type, desc.digest
        if top_type in INDEX_TYPES:
            child = select_platform(parse_index(top, what), what)
            data = layout.read(child.digest, MAX_INDEX_BYTES)
            mtype = media_type_of(data, child.media_type, what)
            mdigest = child.digest
        manifest = parse_manifest(data, mtype, what)
        resolved = Resolved(top_digest=desc.digest, manifest_digest=mdigest, manifest_data=data,
                            manifest_type=mtype, manifest=manifest)
        out.append(_Entry(resolved=resolved, ref=ref, names=()))
    return out, notes


def _hash_member(archive: Path, name: str) -> tuple[str, int, bool]:
    """(sha256 digest, size, gzip?) of a tar member, read once."""
    with tarfile.open(archive, "r:") as tar:
        fh = tar.extractfile(name)
        if fh is None:
            raise ArchiveError(f"{archive}: layer {name!r} is not a file")
        h = hashlib.sha256()
        size = 0
        head = b""
        while True:
            data = fh.read(CHUNK)
            if not data:
                break
            if not head:
                head = data[:2]
            h.update(data)
            size += len(data)
    return f"sha256:{h.hexdigest()}", size, head == b"\x1f\x8b"


def _docker_entries(archive: Path) -> tuple[list[_Entry], dict[str, str]]:
    raw = _read_member(archive, "manifest.json", MAX_INDEX_BYTES)
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ArchiveError(f"docker-archive {archive}: manifest.json is not JSON: {exc}") from exc
    if not isinstance(doc, list):
        raise ArchiveError(f"docker-archive {archive}: manifest.json is not a list of images")
    members: dict[str, str] = {}
    out: list[_Entry] = []
    for i, item in enumerate(doc):
        what = f"docker-archive {archive} image #{i + 1}"
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) or not isinstance(
                item.get("Layers"), list):
            raise ArchiveError(f"{what}: needs Config and Layers")
        config = _read_member(archive, item["Config"], MAX_INDEX_BYTES)
        config_digest = digest_of(config)
        members[config_digest] = item["Config"]
        layers = []
        for name in item["Layers"]:
            digest, size, gz = _hash_member(archive, str(name))
            members[digest] = str(name)
            layers.append({"mediaType": MT_DOCKER_LAYER_GZIP if gz else MT_DOCKER_LAYER, "size": size,
                           "digest": digest})
        manifest_doc = {"schemaVersion": 2, "mediaType": MT_DOCKER_MANIFEST,
                        "config": {"mediaType": MT_DOCKER_CONFIG, "size": len(config),
                                   "digest": config_digest},
                        "layers": layers}
        data = json.dumps(manifest_doc, separators=(",", ":"), sort_keys=True).encode()
        mdigest = digest_of(data)
        resolved = Resolved(top_digest=mdigest, manifest_digest=mdigest, manifest_data=data,
                            manifest_type=MT_DOCKER_MANIFEST,
                            manifest=parse_manifest(data, MT_DOCKER_MANIFEST, what))
        names = tuple(reference.parse(str(tag)).tagged for tag in item.get("RepoTags") or [])
        out.append(_Entry(resolved=resolved, ref=None, names=names))
    return out, members


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportResult:
    records: tuple[ImageRecord, ...]
    notes: tuple[str, ...]


async def import_path(pipeline: Pipeline, path: Path, *, base_name: str = "",
                      progress: PullProgress | None = None) -> ImportResult:
    """Import every image of an OCI layout or docker-archive at path.

    Raises:
        InvalidArgument: path is missing or not an archive crib reads.
        ContentError / UnsafeLayer / BadImage: as for a pull.
    """
    progress = progress or PullProgress(ref=str(path))
    if not await asyncio.to_thread(path.exists):
        raise InvalidArgument(f"{path} does not exist; give an OCI layout directory, an OCI layout tar or a "
                              "docker-archive tar (docker save)")
    if base_name:
        base_ref = reference.parse(base_name, default_tag=False)
        if base_ref.tag or base_ref.digest:
            raise InvalidArgument(f"--name {base_name!r} must be a repository without tag or digest")
        base_name = base_ref.name

    def plan() -> tuple[list[_Entry], list[str], BlobSource]:
        if path.is_dir():
            if not (path / "oci-layout").is_file():
                raise InvalidArgument(f"{path} is a directory without an oci-layout file: not an OCI layout")
            layout = _Layout(path, None)
            entries, notes = _layout_entries(layout, base_name)
            return entries, notes, layout.source()
        infos = _tar_members(path)
        if "oci-layout" in infos and "index.json" in infos:
            members: dict[str, str] = {}
            for name in infos:
                parts = name.split("/")
                if len(parts) == 3 and parts[0] == "blobs":
                    members[f"{parts[1]}:{parts[2]}"] = name
            layout = _Layout(path, members)
            entries, notes = _layout_entries(layout, base_name)
            return entries, notes, layout.source()
        if "manifest.json" in infos:
            entries, dmembers = _docker_entries(path)
            return entries, [], TarMemberSource(f"docker-archive {path}", path, dmembers)
        raise InvalidArgument(f"{path} is neither an OCI layout (oci-layout, index.json) nor a "
                              "docker-archive "
                              "(manifest.json)")

    entries, notes, source = await asyncio.to_thread(plan)
    if not entries:
        raise InvalidArgument(f"{path} holds no images")
    records: list[ImageRecord] = []
    for entry in entries:
        what = f"import of {entry.ref or entry.resolved.manifest_digest} from {path}"
        records.append(await fetch_image(pipeline, entry.ref, source, entry.resolved, progress, what,
                                         extra_names=entry.names))
    return ImportResult(records=tuple(records), notes=tuple(notes))


__all__ = ["ImportResult", "import_path"]
