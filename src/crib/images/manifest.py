"""Manifests, indexes and image configs: parsing, validation and platform selection (pure logic).

Accepted: the OCI image index and manifest, the Docker manifest list and schema 2 manifest. Docker schema 1
(`application/vnd.docker.distribution.manifest.v1+json`, signed or not) has been deprecated since 2017 and
is refused with an error naming it. From an index, the entry for this host's os/architecture/variant is
chosen (an entry without a variant matches any; among several, an exact variant wins).
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass
from typing import Any

from crib.errors import CribError, InvalidArgument, NotFound
from crib.images.reference import check_digest
from crib.state.records import ImageConfig

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
MT_DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
CONFIG_TYPES = (MT_OCI_CONFIG, MT_DOCKER_CONFIG)
#: What crib sends in Accept: every format it can use, nothing it would refuse.
ACCEPT = ", ".join((MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST))

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
}
NONDISTRIBUTABLE_TYPES = {
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
}


class BadImage(CribError):
    """The registry served something that is not a usable image (wrong type, broken JSON, inconsistent)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """An image manifest: its config and layers, bottom first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


_MACHINES = {"x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", "v8"),
             "arm64": ("arm64", "v8"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
             "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
             "i686": ("386", ""), "i386": ("386", "")}


def host_platform() -> Platform:
    """This machine in OCI terms (x86_64 -> linux/amd64, aarch64 -> linux/arm64/v8)."""
    arch, variant = _MACHINES.get(_platform.machine(), (_platform.machine(), ""))
    return Platform(os="linux", architecture=arch, variant=variant)


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise BadImage(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError:  # "[[[[..." nested past the interpreter's stack: no real manifest does that
        raise BadImage(f"{what} is not a usable JSON document: it is nested too deeply") from None
    if not isinstance(value, dict):
        raise BadImage(f"{what} is not a JSON object")
    return value


def _descriptor(raw: Any, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise BadImage(f"{what}: a descriptor is not a JSON object")
    media_type, digest, size = raw.get("mediaType", ""), raw.get("digest"), raw.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadImage(f"{what}: a descriptor lacks a digest or a valid size")
    try:
        check_digest(digest, what=f"{what}: descriptor digest")
    except InvalidArgument as exc:
        raise BadImage(str(exc)) from exc
    plat = raw.get("platform")
    ann = raw.get("annotations")
    return Descriptor(media_type=str(media_type), digest=digest, size=size,
                      platform={str(k): str(v) for k, v in plat.items()} if isinstance(plat, dict) else None,
                      annotations={str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else None)


def media_type_of(data: bytes, header_type: str, what: str) -> str:
    """The manifest's media type: the document's own mediaType, else the Content-Type the server sent.

    Raises:
        BadImage: schema 1, or nothing crib can use.
    """
    doc = _json(data, what)
    declared = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) else ""
    media_type = declared or header_type.split(";", 1)[0].strip()
    if doc.get("schemaVersion") == 1 or media_type in (MT_DOCKER_SCHEMA1, MT_DOCKER_SCHEMA1_SIGNED):
        raise BadImage(f"{what} is a Docker schema1 manifest ({MT_DOCKER_SCHEMA1}), deprecated since 2017 "
                       "and "
                       "not supported by crib; rebuild or re-push the image with a current tool")
    if not media_type:
        # OCI allows omitting mediaType: tell index from manifest by shape.
        media_type = MT_OCI_INDEX if "manifests" in doc else MT_OCI_MANIFEST
    if media_type not in INDEX_TYPES + MANIFEST_TYPES:
        raise BadImage(f"{what} has media type {media_type!r}, which is not a container image manifest or "
                       "index")
    return media_type


def parse_index(data: bytes, what: str) -> list[Descriptor]:
    doc = _json(data, what)
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise BadImage(f"{what}: an index without a \"manifests\" list")
    return [_descriptor(e, what) for e in entries]


def select_platform(entries: list[Descriptor], what: str, want: Platform | None = None) -> Descriptor:
    """The entry for want (default: this host).

    Raises:
        NotFound: no entry matches; the message lists what the index offers.
    """
    want = want or host_platform()
    best: Descriptor | None = None
    for entry in entries:
        plat = entry.platform or {}
        if entry.media_type and entry.media_type not in MANIFEST_TYPES:
            continue
        if plat.get("os") != want.os or plat.get("architecture") != want.architecture:
            continue
        variant = plat.get("variant", "")
        if variant == want.variant:
            return entry
        if not variant or not want.variant:
            best = best or entry
    if best is not None:
        return best
    offered = ", ".join(str(Platform(os=(e.platform or {}).get("os", "?"),
                                     architecture=(e.platform or {}).get("architecture", "?"),
                                     variant=(e.platform or {}).get("variant", "")))
                        for e in entries) or "nothing"
    raise NotFound(f"{what} has no image for this node's platform {want} (it offers: {offered})")


def parse_manifest(data: bytes, media_type: str, what: str) -> Manifest:
    """Parse an image manifest and check its config and layer types.

    Raises:
        BadImage: not an image (an artifact), a non-distributable layer, an unknown layer type.
    """
    doc = _json(data, what)
    config = _descriptor(doc.get("config"), what)
    if config.media_type not in CONFIG_TYPES:
        raise BadImage(f"{what} has config media type {config.media_type!r}: it is an artifact, not a "
                       "container "
                       "image")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise BadImage(f"{what}: a manifest without a \"layers\" list")
    layers = tuple(_descriptor(layer, what) for layer in raw_layers)
    for layer in layers:
        if layer.media_type in NONDISTRIBUTABLE_TYPES:
            raise BadImage(f"{what}: layer {layer.digest} has the non-distributable media type "
                           f"{layer.media_type!r} (a foreign layer that registries do not serve); crib "
                           "cannot pull "
                           "it")
        if layer.media_type not in LAYER_TYPES:
            raise BadImage(f"{what}: layer {layer.digest} has the unsupported media type "
                           f"{layer.media_type!r}")
    return Manifest(media_type=media_type, config=config, layers=layers)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedConfig:
    config: ImageConfig
    diff_ids: tuple[str, ...]
    created: str


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def parse_config(data: bytes, what: str) -> ParsedConfig:
    """The runtime part of an image config blob and its diff_ids.

    Raises:
        BadImage: broken JSON or no rootfs.diff_ids.
    """
    doc = _json(data, what)
    rootfs = doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise BadImage(f"{what}: the image config has no rootfs.diff_ids")
    for d in diff_ids:
        try:
            check_digest(d, what=f"{what}: diff_id")
        except InvalidArgument as exc:
            raise BadImage(str(exc)) from exc
    cfg = _table(doc, "config")
    labels = _table(cfg, "Labels")
    volumes = _table(cfg, "Volumes")
    ports = _table(cfg, "ExposedPorts")
    image_config = ImageConfig(
        user=str(cfg.get("User") or ""),
        env=_strings(cfg.get("Env")),
        entrypoint=_strings(cfg.get("Entrypoint")),
        cmd=_strings(cfg.get("Cmd")),
        working_dir=str(cfg.get("WorkingDir") or ""),
        volumes=tuple(sorted(str(v) for v in volumes)),
        exposed_ports=tuple(sorted(str(p) for p in ports)),
        stop_signal=str(cfg.get("StopSignal") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        os=str(doc.get("os") or "linux"),
        architecture=str(doc.get("architecture") or ""),
        variant=str(doc.get("variant") or ""),
    )
    return ParsedConfig(config=image_config, diff_ids=tuple(diff_ids), created=str(doc.get("created") or ""))


def user_of(config: ImageConfig) -> tuple[int | None, str]:
    """(uid, username) for ImageStatus: "1000" -> (1000, ""), "www-data:1004" -> (None, "www-data")."""
    user = config.user.split(":", 1)[0]
    if not user:
        return None, ""
    if user.isdigit():
        return int(user), ""
    return None, user


__all__ = [
    "ACCEPT",
    "BadImage",
    "Descriptor",
    "Manifest",
    "ParsedConfig",
    "Platform",
    "host_platform",
    "media_type_of",
    "parse_config",
    "parse_index",
    "parse_manifest",
    "select_platform",
    "user_of",
]
