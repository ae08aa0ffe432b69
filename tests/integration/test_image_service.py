"""The image service in-process against the real registry: the contract with the runtime, layers through
overlayfs, hostile images, lookups, garbage collection, re-tagging, users, imports.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from crib.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from crib.images.layers import chain_ids
from tests.fixtures import images as img
from tests.fixtures import oci
from tests.fixtures.images import Catalogue
from tests.fixtures.registry import LocalRegistry
from tests.integration.image_helpers import overlay_mount, push_marker_image, service, stored, unique_repo


def check_layers_image(merged: Path) -> None:
    """The merged root of crib-test/layers, as the image's author meant it."""
    for path, content in img.LAYERS_EXPECTED_FILES.items():
        assert (merged / path.lstrip("/")).read_bytes() == content, path
    for path in img.LAYERS_ABSENT:
        assert not os.path.lexists(merged / path.lstrip("/")), path
    a, b = merged / "layers/hardlink-a", merged / "layers/hardlink-b"
    assert a.stat().st_ino == b.stat().st_ino
    assert os.getxattr(merged / "layers/xattr", img.LAYERS_XATTR[0]) == img.LAYERS_XATTR[1]
    assert (merged / "layers/setuid").stat().st_mode & 0o7777 == 0o4755


def no_marker_outside(tmp_path: Path) -> bool:
    return not Path("/tmp", img.HOSTILE_MARKER).exists() and not (tmp_path / img.HOSTILE_MARKER).exists()


class FakeUsers:
    def __init__(self, users: dict[str, list[str]]) -> None:
        self.users = users

    def containers_using(self, image_id: str) -> list[str]:
        return self.users.get(image_id, [])


async def test_layer_dirs_merge_through_overlayfs(tmp_path: Path, images: Catalogue) -> None:
    entry = images[img.LAYERS]
    async with service(tmp_path) as svc:
        rec = await svc.pull(entry.reference)
        assert rec.id == entry.image_id
        assert svc.resolve(entry.reference) == rec
        dirs = svc.layer_dirs(rec)
        assert [d.name for d in dirs] == [c.split(":")[1] for c in chain_ids(entry.diff_ids)]  # lowest first
        with overlay_mount(dirs, tmp_path / "merged") as merged:
            check_layers_image(merged)
        assert rec.config.cmd == ("ls", "/layers")
        assert [layer.digest for layer in rec.layers] == list(entry.layer_digests)


@pytest.mark.parametrize("case", list(img.HOSTILE_CASES), ids=str)
async def test_hostile_image_fails_and_leaves_nothing(tmp_path: Path, images: Catalogue, case: str) -> None:
    entry = images[f"{img.HOSTILE_REPOSITORY}:{case}"]
    async with service(tmp_path) as svc:
        with pytest.raises(PermissionDenied, match="the layer was refused") as err:
            await svc.pull(entry.reference)
        assert entry.layer_digests[-1] in str(err.value)
        assert svc.list() == []
        assert stored(tmp_path / "root") == {"blobs": [], "layers": [], "tmp": []}
    assert no_marker_outside(tmp_path)


async def test_lookup_by_id_prefix_tag_and_digest(tmp_path: Path, images: Catalogue) -> None:
    entry = images[img.BUSYBOX]
    async with service(tmp_path) as svc:
        rec = await svc.pull(entry.reference)
        hexid = rec.id.split(":")[1]
        for ref in (rec.id, hexid, hexid[:12], f"sha256:{hexid[:12]}", entry.reference, entry.pinned):
            assert svc.find(ref) == rec, ref
        assert rec.repo_tags == (entry.reference,)
        assert rec.repo_digests == (entry.pinned,)
        assert svc.find(f"{images.host}/crib-test/busybox:nope") is None
        with pytest.raises(NotFound, match="image 'nothing/here' not found"):
            svc.resolve("nothing/here")
        with pytest.raises(InvalidArgument):
            svc.find("busybox:bad!tag")
        assert svc.list(entry.reference) == [rec]
        assert svc.list("nothing/here") == []


async def test_digest_and_tag_at_digest_pulls_record_no_tag(tmp_path: Path, images: Catalogue) -> None:
    entry = images[img.BUSYBOX_DOCKER]
    async with service(tmp_path) as svc:
        rec = await svc.pull(entry.pinned)
        assert (rec.repo_tags, rec.repo_digests) == ((), (entry.pinned,))
        assert rec.manifest_media_type == oci.MT_DOCKER_MANIFEST
        both = f"{images.host}/{entry.repository}:{entry.tag}@{entry.manifest_digest}"
        assert (await svc.pull(both)).repo_tags == ()
        with pytest.raises(NotFound):
            await svc.pull(f"{images.host}/{entry.repository}@sha256:{'0' * 64}")


@pytest.mark.parametrize("name", [img.MULTIARCH, img.MULTIARCH_DOCKER], ids=["oci-index", "docker-list"])
async def test_multiarch_selects_this_host(tmp_path: Path, images: Catalogue, name: str) -> None:
    entry = images[name]
    async with service(tmp_path) as svc:
        rec = await svc.pull(entry.reference)
        assert rec.id == entry.image_id
        assert rec.repo_digests == (f"{images.host}/{entry.repository}@{entry.manifest_digest}",)  # the index
        assert rec.manifest_digest == entry.image.digest
        top = svc.layer_dirs(rec)[-1]
        assert (top / "etc/arch").read_text() == f"{img.host_platform().architecture}\n"


async def test_all_formats_give_one_image(tmp_path: Path, images: Catalogue) -> None:
    names = (img.BUSYBOX_OCI, img.BUSYBOX_DOCKER, img.BUSYBOX_ZSTD, img.BUSYBOX_UNCOMPRESSED)
    async with service(tmp_path) as svc:
        ids = {(await svc.pull(images.reference(n))).id for n in names}
        assert ids == {images[img.BUSYBOX].image_id}
        (rec,) = svc.list()
        assert set(rec.repo_tags) == {images.reference(n) for n in names}
        assert len(stored(tmp_path / "root")["layers"]) == 1  # one chain id, unpacked once


async def test_concurrent_pulls_download_each_blob_once(tmp_path: Path, images: Catalogue,
                                                        registry_proxy: object) -> None:
    from tests.fixtures.registry_proxy import RegistryProxy

    assert isinstance(registry_proxy, RegistryProxy)
    entry = images[img.LAYERS]
    ref = registry_proxy.reference(img.LAYERS)
    async with service(tmp_path) as svc:
        records = await asyncio.gather(*(svc.pull(ref) for _ in range(5)))
        assert {r.id for r in records} == {entry.image_id}
    for digest in (entry.image_id, *entry.layer_digests):
        assert registry_proxy.blob_gets(digest) == 1, digest


async def test_tag_that_moved_is_repointed(tmp_path: Path, registry: LocalRegistry) -> None:
    repo = unique_repo()
    ref = f"{registry.host}/{repo}:v1"
    first = push_marker_image(registry, repo, "v1", "one")
    async with service(tmp_path) as svc:
        old = await svc.pull(ref)
        assert old.id == first.image_id
        second = push_marker_image(registry, repo, "v1", "two")
        new = await svc.pull(ref)
        assert new.id == second.image_id != old.id
        assert svc.resolve(ref).id == new.id
        stale = svc.resolve(old.id)
        assert stale.repo_tags == ()  # still listed, by id
        assert stale.repo_digests == (f"{registry.host}/{repo}@{first.digest}",)
        assert {r.id for r in svc.list()} == {old.id, new.id}


async def test_remove_collects_unshared_content_and_respects_users(tmp_path: Path, images: Catalogue) -> None:
    async with service(tmp_path) as svc:
        base = await svc.pull(images.reference(img.BUSYBOX))
        layers = await svc.pull(images.reference(img.LAYERS))
        svc.set_users(FakeUsers({layers.id: ["web", "db"]}))
        with pytest.raises(FailedPrecondition, match=r"used by container\(s\) web, db"):
            await svc.remove(images.reference(img.LAYERS))
        svc.set_users(FakeUsers({}))
        assert await svc.remove(layers.id) is not None
        assert await svc.remove(layers.id) is None  # already gone: fine
        left = stored(tmp_path / "root")
        assert left["layers"] == [base.layers[0].chain_id.split(":")[1]]  # the shared base layer stays
        assert sorted(left["blobs"]) == sorted({base.id, base.manifest_digest, base.layers[0].digest})
        assert left["tmp"] == []
        await svc.remove(images.reference(img.BUSYBOX))
        assert stored(tmp_path / "root") == {"blobs": [], "layers": [], "tmp": []}


async def test_tar_bomb_is_stopped(tmp_path: Path, images: Catalogue) -> None:
    async with service(tmp_path, max_layer_bytes=256 * 1024) as svc:
        with pytest.raises(ResourceExhausted, match=r"more than 262144 bytes \(image.max_layer_bytes\)"):
            await svc.pull(images.reference(img.BUSYBOX))
        assert stored(tmp_path / "root") == {"blobs": [], "layers": [], "tmp": []}


async def test_records_survive_a_restart(tmp_path: Path, images: Catalogue) -> None:
    async with service(tmp_path) as svc:
        rec = await svc.pull(images.reference(img.CONFIG))
    async with service(tmp_path) as svc:
        again = svc.resolve(images.reference(img.CONFIG))
        assert again == rec
        assert again.config.stop_signal == "SIGUSR1"
        assert again.config.volumes == ("/data",)
        assert again.config.exposed_ports == ("8080/tcp", "9090/udp")
        assert again.config.labels == {"org.crib.test": "config", "org.crib.empty": ""}
        assert all(d.is_dir() for d in svc.layer_dirs(again))


async def test_prune_all_keeps_pinned_and_used_images(tmp_path: Path, images: Catalogue) -> None:
    pinned = images.reference(img.USER_UID)
    async with service(tmp_path, pinned_images=[pinned]) as svc:
        kept = await svc.pull(pinned)
        used = await svc.pull(images.reference(img.USER_NAME))
        gone = await svc.pull(images.reference(img.CONFIG))
        svc.set_users(FakeUsers({used.id: ["c1"]}))
        assert svc.is_pinned(kept)
        assert not svc.is_pinned(gone)
        result = await svc.prune(all_unused=True)
        assert result.removed_images == (gone.id,)
        assert result.gc.layers == 1  # the config image's own layer
        assert {r.id for r in svc.list()} == {kept.id, used.id}


async def test_fs_info_counts_layers_and_container_layers(tmp_path: Path, images: Catalogue) -> None:
    async with service(tmp_path) as svc:
        empty = await svc.fs_info()
        await svc.pull(images.reference(img.BUSYBOX))
        (tmp_path / "root/containers/c1/upper").mkdir(parents=True)
        (tmp_path / "root/containers/c1/upper/file").write_bytes(b"x" * 100_000)
        info = await svc.fs_info()
        assert info.images.mountpoint == str(tmp_path / "root/layers")
        assert info.containers.mountpoint == str(tmp_path / "root/containers")
        assert info.images.used_bytes > empty.images.used_bytes + 1_000_000  # busybox and its blob
        assert info.images.inodes_used > 290  # the busybox layer's entries
        assert info.containers.used_bytes >= 100_000
        assert info.containers.inodes_used == 3  # c1, upper, file


@pytest.mark.parametrize("form", ["layout-dir", "layout-tar", "docker-archive"])
async def test_offline_import(tmp_path: Path, form: str) -> None:
    artifacts = img.catalogue_artifacts()
    layers, multi = artifacts[img.LAYERS], artifacts[img.MULTIARCH]
    assert isinstance(layers, oci.Image)
    assert isinstance(multi, oci.ImageIndex)
    if form == "layout-dir":
        path = oci.write_oci_layout(tmp_path / "layout", {"v1": layers, "example.com/multi:2": multi})
    elif form == "layout-tar":
        path = oci.write_oci_layout_tar(tmp_path / "layout.tar", {"v1": layers, "example.com/multi:2": multi})
    else:
        path = oci.write_docker_archive(tmp_path / "image.tar", layers, repo_tags=["example.com/layers:v1"])
    async with service(tmp_path) as svc:
        result = await svc.import_archive(str(path), base_name="example.com/layers")
        ids = {r.id for r in result.records}
        assert layers.image_id in ids
        rec = svc.resolve("example.com/layers:v1")
        assert rec.id == layers.image_id
        with overlay_mount(svc.layer_dirs(rec), tmp_path / "merged") as merged:
            assert (merged / "layers/keep.txt").read_bytes() == img.LAYERS_EXPECTED_FILES["/layers/keep.txt"]
        if form != "docker-archive":
            assert svc.resolve("example.com/multi:2").id == multi.image_for(img.host_platform()).image_id
            assert rec.repo_digests == (f"example.com/layers@{layers.digest}",)
        untagged = await svc.import_archive(str(path))  # without --name the bare tag cannot name an image
        if form != "docker-archive":
            assert any("--name" in note for note in untagged.notes)
        bogus = tmp_path / "bogus.tar"
        oci._tar_entries(bogus, [("hello.txt", b"hi")])
        with pytest.raises(InvalidArgument, match="neither an OCI layout"):
            await svc.import_archive(str(bogus))

