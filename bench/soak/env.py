"""The soak's world: crib on a small loop-mounted root, a registry and a stalling proxy in front of it, a
CNI bed whose chain has the failpoint plugin, and the images the client runs.

Everything lives under one temporary directory and is torn down by path or PID (never by name): the loop
mount and its device, the registry and proxy, the bed's bridge, rules and leases, the daemon.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import remove_cgroups
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.registry import LocalRegistry
from tests.fixtures.registry_proxy import RegistryProxy

ROOT_FS_MB = 768  # big enough for the images and ~60 containers' upper dirs, small enough to fill fast
STALL_SECONDS = 8  # how long a stalled CNI ADD sleeps unless the injector kills it first


def _run(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=60).stdout


@dataclass
class Env:
    """What the client, the injector and the checks need to reach (see the module note)."""

    workdir: Path
    tag: str
    daemon: CribDaemon
    bed: Testbed
    registry: LocalRegistry
    proxy: RegistryProxy
    busybox: str  # run by every container, pulled straight from the registry
    pullme: str  # pulled and removed again and again through the proxy (which can stall it)
    pullme_blobs: tuple[str, ...]  # its layer digests, for the proxy's stall
    stall_file: Path  # while it exists, the failpoint plugin stalls every ADD (writing its pid to marker)
    stall_marker: Path
    log_dir: Path

    @property
    def root(self) -> Path:
        return self.daemon.root

    @property
    def runroot(self) -> Path:
        return self.daemon.runroot

    @property
    def runc_root(self) -> Path:
        return self.daemon.runroot / "runc"


def _loop_root(image: Path, mountpoint: Path, size_mb: int) -> None:
    with image.open("wb") as fh:
        fh.truncate(size_mb * 1024 * 1024)
    _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    mountpoint.mkdir(parents=True)
    _run("mount", "-o", "loop", str(image), str(mountpoint))


def _unmount(mountpoint: Path) -> None:
    """Unmount crib's loop-mounted root, retrying while it is busy; lazily as a last resort, saying why.

    (Soak runs once left it mounted: the single umount's failure was swallowed, and the loop device and its
    deleted image stayed until the machine restarted.)
    """
    error = ""
    for _ in range(20):
        if subprocess.run(["mountpoint", "-q", str(mountpoint)], check=False).returncode != 0:
            return
        done = subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True, text=True,
                              timeout=60)
        error = done.stderr.strip()
        time.sleep(0.5)
    print(f"soak: {mountpoint} stayed busy ({error}); unmounted lazily")
    subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True, timeout=60)


@contextlib.contextmanager
def soak_env(*, daemon_config: dict[str, Any] | None = None) -> Iterator[Env]:
    """Bring the world up, yield it, and take every piece down again (in reverse), whatever happened."""
    workdir = Path(tempfile.mkdtemp(prefix="crib-soak-"))
    tag = f"cribsoak{uuid.uuid4().hex[:6]}"
    stack = contextlib.ExitStack()
    try:
        stack.callback(shutil.rmtree, workdir, True)
        root = workdir / "crib" / "root"
        _loop_root(workdir / "root.img", root, ROOT_FS_MB)
        stack.callback(_unmount, root)

        registry = LocalRegistry(workdir / "registry").start()
        stack.callback(registry.stop)
        artifacts = img.catalogue_artifacts()
        catalogue = img.seed(registry, {name: artifacts[name] for name in (img.BUSYBOX, img.CONFIG)})
        proxy = RegistryProxy(registry).start()
        stack.callback(proxy.stop)

        bed = Testbed(workdir / "cni", tag)
        stack.callback(bed.cleanup)
        stall_file, marker = workdir / "stall-add", workdir / "stalled-add"
        failpoint = {"type": "failpoint", "capabilities": {"portMappings": True},
                     "failpoint": {"delegate": "portmap",
                                   "stall": {"command": "ADD", "marker": str(marker),
                                             "seconds": STALL_SECONDS, "while_exists": str(stall_file)}}}
        bed.write_conflist([bed.bridge_plugin(), failpoint, {"type": "loopback"}])

        config = {"network": bed.network_config(), **(daemon_config or {})}
        daemon = CribDaemon(workdir / "crib", config)
        stack.callback(remove_cgroups, tag)
        stack.callback(daemon.stop)
        daemon.start()
        pullme = catalogue[img.CONFIG]  # an image of its own (busybox:zstd shares busybox's image id)
        yield Env(workdir=workdir, tag=tag, daemon=daemon, bed=bed, registry=registry, proxy=proxy,
                  busybox=catalogue.reference(img.BUSYBOX), pullme=proxy.reference(pullme.name),
                  pullme_blobs=pullme.layer_digests, stall_file=stall_file, stall_marker=marker,
                  log_dir=workdir / "logs")
    finally:
        stack.close()


__all__ = ["STALL_SECONDS", "Env", "soak_env"]
