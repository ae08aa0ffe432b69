"""crib's stored records: frozen dataclasses, changed with dataclasses.replace, stored through codec.

Each domain adds its records here, so that every layer that needs to read one (the spec builder reads an
image's config, the servicers read everything) imports it from one place below them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    """The runtime-relevant part of an OCI image config (`config` in the image's config blob).

    The spec builder reads it to fill in what the CRI ContainerConfig leaves out (args, env, user, working
    dir, stop signal, volumes).
    """

    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    volumes: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    stop_signal: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    os: str = "linux"
    architecture: str = ""
    variant: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerRef:
    """One layer of an image, as the image service unpacked it.

    chain_id names the unpacked directory (shared by every image with the same layer stack below it);
    digest names the blob it came from.
    """

    digest: str
    diff_id: str
    chain_id: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRecord:
    """A pulled or imported image. id is the config digest ("sha256:<hex>"), as containerd reports it."""

    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    size: int = 0
    config: ImageConfig = field(default_factory=ImageConfig)
    layers: tuple[LayerRef, ...] = ()
    manifest_digest: str = ""
    manifest_media_type: str = ""
    created: str = ""
    pulled_at: float = 0.0


__all__ = ["ImageConfig", "ImageRecord", "LayerRef"]
