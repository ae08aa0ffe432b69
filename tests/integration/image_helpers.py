"""Helpers shared by the image integration tests: an in-process ImageService on a test's own root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from crib.config import Config, Duration, ImageConfig
from crib.images import ImageService
from crib.state import Database
from tests.fixtures import oci
from tests.fixtures.images import RegistryClient, busybox_layer, host_platform
from tests.fixtures.registry import LocalRegistry


def image_config(tmp_path: Path, **overrides: Any) -> Config:
    """A Config with a private root and no host files (registries.conf, certs.d) involved."""
    image = {"registries_conf": str(tmp_path / "registries.conf"), "certs_dir": ""}
    image.update(overrides)
    if isinstance(image.get("pull_progress_timeout"), int | float):
        image["pull_progress_timeout"] = Duration(float(image["pull_progress_timeout"]))
    return Config(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"), image=ImageConfig(**image))


@contextlib.asynccontextmanager
async def service(tmp_path: Path, **overrides: Any) -> AsyncIterator[ImageService]:
    cfg = image_config(tmp_path, **overrides)
    os.makedirs(cfg.root, exist_ok=True)
    db = Database(Path(cfg.root) / "state.db")
    svc = ImageService(cfg, db, retry_base=0.01)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()
        db.close()


def stored(root: Path) -> dict[str, list[str]]:
    """What the store holds on disk: blobs, layer dirs and temporary files."""
    def names(d: Path) -> list[str]:
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    blobs = sorted(f"{a.name}:{b.name}" for a in (root / "blobs").iterdir() for b in a.iterdir()) \
        if (root / "blobs").is_dir() else []
    return {"blobs": blobs, "layers": names(root / "layers"), "tmp": names(root / "tmp")}


def unique_repo(prefix: str = "crib-test/unique") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def push_marker_image(registry: LocalRegistry, repository: str, tag: str, marker: str) -> oci.Image:
    """Push busybox plus a one-file layer naming `marker` (a distinct image per marker)."""
    image = oci.build_image([busybox_layer().build(), oci.Layer().file("etc/marker", marker + "\n").build()],
                            platform=host_platform(), spec=oci.ImageConfig(labels={"marker": marker}))
    with RegistryClient.for_registry(registry) as client:
        client.push(repository, image, [tag])
    return image


@contextlib.contextmanager
def overlay_mount(lowers_bottom_first: list[Path], target: Path) -> Iterator[Path]:
    """A read-only overlay of the given layer directories, unmounted afterwards."""
    target.mkdir(parents=True, exist_ok=True)
    lowerdir = ":".join(str(p) for p in reversed(lowers_bottom_first))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir}", str(target)],
                   check=True, capture_output=True, timeout=30)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True, capture_output=True, timeout=30)


def write_registries_conf(path: Path, text: str) -> None:
    path.write_text(text)
    os.utime(path)
