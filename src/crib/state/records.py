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


__all__ = ["ImageConfig"]
