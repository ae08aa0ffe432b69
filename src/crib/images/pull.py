"""Pulling one reference from a registry: endpoints, manifest resolution, content, the image record.

Endpoints come from registries.conf: mirrors in order, then the registry itself; any failure on a mirror
(unreachable, 404, auth, a broken manifest) moves on to the next, and the error of the last one is
reported together with what the mirrors said. Content is then fetched from the endpoint that resolved the
manifest.

The pulled record's names: a tag pull gives `name:tag` plus `name@<digest of what the tag pointed at>`
(the index digest for a multi-arch tag, as containerd reports it); a digest pull gives only
`name@digest`, and `name:tag@digest` is treated as the digest pull (the tag is not recorded, as in
containerd). The record's id is the config digest, so the same image pulled through different manifests
(another compression, another registry) is one image with several names.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from crib import log
from crib.errors import CribError
from crib.images.auth import Credentials, DockerConfig
from crib.images.blobs import ContentError, digest_of
from crib.images.layers import chain_ids
from crib.images.manifest import (
    INDEX_TYPES,
    BadImage,
    Descriptor,
    Manifest,
    ParsedConfig,
    media_type_of,
    parse_config,
    parse_index,
    parse_manifest,
    select_platform,
)
from crib.images.pipeline import Pipeline
from crib.images.progress import PullProgress
from crib.images.reference import Reference
from crib.images.registries_conf import Endpoint, RegistriesConf
from crib.images.registry import RegistryClient, RegistrySession
from crib.images.sources import BlobSource, RegistrySource
from crib.state.records import ImageRecord, LayerRef

_log = log.get(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    """What a reference points at on one endpoint."""

    top_digest: str  # what the tag points at (an index or a manifest)
    manifest_digest: str  # the image manifest chosen for this platform
    manifest_data: bytes
    manifest_type: str
    manifest: Manifest


class Puller:
    """Registry pulls on top of the shared Pipeline."""

    def __init__(self, *, pipeline: Pipeline, registry: RegistryClient, conf: RegistriesConf,
                 docker_config: DockerConfig) -> None:
        self.pipeline = pipeline
        self.registry = registry
        self.conf = conf
        self.docker_config = docker_config

    def _creds_for(self, ep: Endpoint, ref: Reference, given: Credentials | None) -> Credentials | None:
        # The request's credentials are for the image's own registry, never handed to a mirror elsewhere.
        if given is not None and (not ep.mirror or ep.host == ref.domain):
            return given
        return self.docker_config.lookup(ep.host)

    async def pull(self, ref: Reference, creds: Credentials | None, progress: PullProgress) -> ImageRecord:
        what = f"image {ref}"
        endpoints = self.conf.endpoints(ref)
        failures: list[str] = []
        for i, ep in enumerate(endpoints):
            session = self.registry.session(ep, self._creds_for(ep, ref, creds))
            try:
                resolved = await self._resolve(session, ep, what, progress)
            except CribError as exc:
                if i + 1 == len(endpoints):
                    if failures:
                        note = "; earlier: " + "; ".join(failures)
                        raise type(exc)(f"{exc}{note}") from exc
                    raise
                failures.append(f"mirror {ep}: {exc}")
                log.event(_log, 30, "mirror failed, trying the next endpoint", ref=str(ref), mirror=str(ep),
                          error=str(exc))
                continue
            if failures:
                log.event(_log, 20, "pulling from a later endpoint", ref=str(ref), endpoint=str(ep))
            return await fetch_image(self.pipeline, ref, RegistrySource(session), resolved, progress, what)
        raise AssertionError("registries.conf gave no endpoint")  # endpoints() always returns one

    async def _resolve(self, session: RegistrySession, ep: Endpoint, what: str,
                       progress: PullProgress) -> Resolved:
        progress.set_phase("resolving")
        fetched = await session.manifest(ep.target, what)
        progress.touch()
        top_type = media_type_of(fetched.data, fetched.content_type, what)
        by_digest = ":" in ep.target
        algorithm = ep.target.split(":", 1)[0] if by_digest else "sha256"
        top_digest = digest_of(fetched.data, algorithm)
        if by_digest and top_digest != ep.target:
            raise ContentError(f"{what}: {session} served a manifest that hashes to {top_digest}, not the "
                               f"requested {ep.target}")
        header = fetched.digest_header
        if not by_digest and header.startswith("sha256:") and header != top_digest:
            raise ContentError(f"{what}: {session} says the manifest is {header}, its bytes hash to "
                               f"{top_digest}")
        data, mtype, mdigest = fetched.data, top_type, top_digest
        if top_type in INDEX_TYPES:
            entry = select_platform(parse_index(fetched.data, what), what)
            child = await session.manifest(entry.digest, f"{what} ({entry.digest})")
            progress.touch()
            got = digest_of(child.data, entry.digest.split(":", 1)[0])
            if got != entry.digest:
                raise ContentError(f"{what}: {session} served a manifest that hashes to {got}, the index "
                                   "says "
                                   f"{entry.digest}")
            mtype = media_type_of(child.data, child.content_type, f"{what} ({entry.digest})")
            if mtype in INDEX_TYPES:
                raise BadImage(f"{what}: the index entry {entry.digest} for this platform is itself an index")
            data, mdigest = child.data, entry.digest
        manifest = parse_manifest(data, mtype, what)
        return Resolved(top_digest=top_digest, manifest_digest=mdigest, manifest_data=data,
                        manifest_type=mtype, manifest=manifest)


async def fetch_image(pipeline: Pipeline, ref: Reference | None, source: BlobSource, resolved: Resolved,
                      progress: PullProgress, what: str, *, extra_names: tuple[str, ...] = ()) -> ImageRecord:
    """The content half of a pull or an import: everything after the manifest is known.

    On failure, what this pull stored and no image needs is removed before the error is raised.

    Raises:
        BadImage: config and manifest disagree.
        ContentError: a digest does not match.
        UnsafeLayer: a layer tries to leave its directory.
    """
    touched: list[str] = []
    try:
        return await _fetch_leased(pipeline, ref, source, resolved, progress, what, extra_names, touched)
    except BaseException:
        progress.set_phase("failed")
        await asyncio.shield(pipeline.cleanup(touched))
        raise


async def _fetch_leased(pipeline: Pipeline, ref: Reference | None, source: BlobSource, resolved: Resolved,
                        progress: PullProgress, what: str, extra_names: tuple[str, ...],
                        touched: list[str]) -> ImageRecord:
    manifest = resolved.manifest
    config_desc = manifest.config
    touched += [resolved.manifest_digest, config_desc.digest, *(layer.digest for layer in manifest.layers)]
    with pipeline.lease(touched):
        progress.set_phase("config")
        config_data = await pipeline.read_config(source, config_desc, what)
        parsed = parse_config(config_data, f"{what}: config {config_desc.digest}")
        if len(parsed.diff_ids) != len(manifest.layers):
            raise BadImage(f"{what}: the manifest lists {len(manifest.layers)} layers, the config "
                           f"{len(parsed.diff_ids)} diff_ids")
        chains = chain_ids(parsed.diff_ids)
        touched += chains
        with pipeline.lease(chains):
            progress.set_phase("layers")
            try:
                async with asyncio.TaskGroup() as group:
                    for desc, diff_id, chain in zip(manifest.layers, parsed.diff_ids, chains, strict=True):
                        group.create_task(pipeline.ensure_layer(source, desc, diff_id, chain, progress, what))
            except BaseExceptionGroup as group_exc:
                raise _first(group_exc) from None
            progress.set_phase("committing")
            await pipeline.store_small(config_desc.digest, config_data, f"{what}: config")
            await pipeline.store_small(resolved.manifest_digest, resolved.manifest_data, f"{what}: manifest")
            record = pipeline.store.save(_record(ref, resolved, config_desc, parsed, chains, extra_names))
            progress.set_phase("done")
            return record


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The most telling error of a failed layer group (a CribError before a cancellation)."""
    flat: list[BaseException] = []

    def walk(g: BaseException) -> None:
        if isinstance(g, BaseExceptionGroup):
            for e in g.exceptions:
                walk(e)
        else:
            flat.append(g)

    walk(group)
    for exc in flat:
        if isinstance(exc, CribError):
            return exc
    return flat[0]


def _record(ref: Reference | None, resolved: Resolved, config_desc: Descriptor, parsed: ParsedConfig,
            chains: list[str], extra_names: tuple[str, ...]) -> ImageRecord:
    manifest = resolved.manifest
    tags: list[str] = []
    digests: list[str] = []
    if ref is not None:
        if ref.tag and not ref.digest:
            tags.append(ref.tagged)
        digests.append(f"{ref.name}@{resolved.top_digest}")
    for name in extra_names:
        (digests if "@" in name else tags).append(name)
    layers = tuple(
        LayerRef(digest=desc.digest, diff_id=diff_id, chain_id=chain, size=desc.size,
                 media_type=desc.media_type)
        for desc, diff_id, chain in zip(manifest.layers, parsed.diff_ids, chains, strict=True))
    return ImageRecord(
        id=config_desc.digest,
        repo_tags=tuple(dict.fromkeys(tags)),
        repo_digests=tuple(dict.fromkeys(digests)),
        size=config_desc.size + sum(layer.size for layer in layers),
        config=parsed.config,
        layers=layers,
        manifest_digest=resolved.manifest_digest,
        manifest_media_type=resolved.manifest_type,
        created=parsed.created,
        pulled_at=time.time(),
    )


__all__ = ["Puller", "Resolved", "fetch_image"]
