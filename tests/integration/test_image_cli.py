"""`crib image ...` against a crib daemon (and pull against containerd, which has no progress stream)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.fixtures import images as img
from tests.fixtures import oci
from tests.fixtures.containerd import Containerd
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.images import Catalogue
from tests.fixtures.registry import TEST_PASSWORD, TEST_USERNAME, LocalRegistry


def crib_cli(endpoint: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    return subprocess.run([sys.executable, "-m", "crib", "-r", endpoint, *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def test_pull_list_status_rm_fsinfo(crib_factory: Callable[..., CribDaemon], tmp_path: Path,
                                    images: Catalogue) -> None:
    d = crib_factory({"image": {"registries_conf": str(tmp_path / "none.conf")}})
    entry = images[img.LAYERS]
    out = crib_cli(d.endpoint, "image", "pull", entry.reference)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"Image is up to date for {entry.image_id}"
    phases = [line.split(": ", 1)[1].split(" ")[0] for line in out.stderr.splitlines()
              if line.startswith(entry.reference)]
    assert phases[-1] == "done"  # earlier phases show too when the pull takes longer than 0.25 s
    total = sum(layer.size for layer in entry.image.layers)
    last = [line for line in out.stderr.splitlines() if line.startswith(entry.reference)][-1]
    assert last.endswith(f"done ({total}/{total} bytes, 4/4 layers)")

    listed = crib_cli(d.endpoint, "image", "list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE", "PINNED"]
    assert row.split()[:3] == [f"{images.host}/crib-test/layers", "latest", entry.image_id[7:20]]
    assert crib_cli(d.endpoint, "image", "list", "-q").stdout.split() == [entry.image_id]
    as_json = json.loads(crib_cli(d.endpoint, "image", "list", "-o", "json").stdout)
    assert as_json["images"][0]["repoDigests"] == [entry.pinned]

    st = crib_cli(d.endpoint, "image", "status", entry.reference)
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    assert doc["status"]["id"] == entry.image_id
    assert doc["info"]["imageSpec"]["config"]["Cmd"] == ["ls", "/layers"]

    fs = json.loads(crib_cli(d.endpoint, "image", "fsinfo").stdout)
    assert fs["imageFilesystems"][0]["fsId"]["mountpoint"] == str(d.root / "layers")
    assert int(fs["imageFilesystems"][0]["usedBytes"]["value"]) > 0

    rm = crib_cli(d.endpoint, "image", "rm", entry.image_id[7:20])
    assert rm.returncode == 0, rm.stderr
    assert rm.stdout.strip() == f"Deleted: {entry.image_id[7:20]}"
    missing = crib_cli(d.endpoint, "image", "status", entry.reference)
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_pull_with_credentials_and_errors(crib_factory: Callable[..., CribDaemon], tmp_path: Path,
                                          auth_images: Catalogue) -> None:
    d = crib_factory({"image": {"registries_conf": str(tmp_path / "none.conf")}})
    ref = auth_images.reference(img.USER_NAME)
    denied = crib_cli(d.endpoint, "image", "pull", ref)
    assert denied.returncode == 1
    assert "UNAUTHENTICATED" in denied.stderr
    assert "Traceback" not in denied.stderr
    ok = crib_cli(d.endpoint, "image", "pull", "--creds", f"{TEST_USERNAME}:{TEST_PASSWORD}", ref)
    assert ok.returncode == 0, ok.stderr
    assert auth_images[img.USER_NAME].image_id in ok.stdout


def test_import_and_prune(crib_factory: Callable[..., CribDaemon], tmp_path: Path) -> None:
    d = crib_factory({"image": {"registries_conf": str(tmp_path / "none.conf")}})
    artifacts = img.catalogue_artifacts()
    image = artifacts[img.CONFIG]
    assert isinstance(image, oci.Image)
    archive = oci.write_docker_archive(tmp_path / "config.tar", image, repo_tags=["example.com/config:1"])
    out = crib_cli(d.endpoint, "image", "import", str(archive))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"imported {image.image_id} example.com/config:1"
    layout = oci.write_oci_layout(tmp_path / "layout", {"v2": image})
    named = crib_cli(d.endpoint, "image", "import", "--name", "example.com/config", str(layout))
    assert named.returncode == 0, named.stderr
    st = json.loads(crib_cli(d.endpoint, "image", "status", "example.com/config:v2").stdout)
    assert sorted(st["status"]["repoTags"]) == ["example.com/config:1", "example.com/config:v2"]
    pruned = crib_cli(d.endpoint, "image", "prune", "--all")
    assert pruned.returncode == 0, pruned.stderr
    assert f"Deleted: {image.image_id}" in pruned.stdout
    assert "freed" in pruned.stdout
    assert crib_cli(d.endpoint, "image", "list", "-q").stdout == ""
    assert not list((d.root / "layers").iterdir())


def test_pull_against_containerd_falls_back_to_plain_cri(tmp_path: Path, registry: LocalRegistry,
                                                         images: Catalogue) -> None:
    # A short directory: containerd refuses socket paths over 104 bytes, which tmp_path can exceed.
    short = Path(tempfile.mkdtemp(prefix="ctrd-img-"))
    try:
        with Containerd(short, cni_conf_dir=str(tmp_path / "no-cni"),
                        mirrors={registry.host: registry.url}) as ctd:
            out = crib_cli(ctd.endpoint, "image", "pull", images.reference(img.BUSYBOX))
            prune = crib_cli(ctd.endpoint, "image", "prune")
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert out.returncode == 0, out.stderr
    assert "no progress from this runtime" in out.stderr
    assert images[img.BUSYBOX].image_id in out.stdout
    assert prune.returncode == 1
    assert "crib extension" in prune.stderr
