"""The test fixtures themselves, against a real ``docker-registry``: if these fail, nothing else can pass.

They check that the registry fixture starts, answers and stops cleanly; that every catalogue image
round-trips through the registry byte for byte; that builds are deterministic; and that the OCI layout
and docker-archive writers produce self-consistent files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from tests.fixtures import images as img
from tests.fixtures import oci
from tests.fixtures.images import Catalogue, RegistryClient
from tests.fixtures.registry import (
    TEST_PASSWORD,
    TEST_USERNAME,
    Credentials,
    LocalRegistry,
    RegistryError,
    htpasswd_entry,
)


def _http() -> httpx.Client:
    return httpx.Client(timeout=30.0, trust_env=False)


def _members(tar_bytes: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        return {member.name: member for member in tar.getmembers()}


def _file(tar_bytes: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None, name
        return extracted.read()


# ---------------------------------------------------------------------------------------- the registry


def test_registry_answers_v2(registry: LocalRegistry) -> None:
    assert registry.running
    assert registry.host == f"127.0.0.1:{registry.port}"
    assert registry.url == f"http://127.0.0.1:{registry.port}"
    assert registry.credentials is None
    with _http() as http:
        response = http.get(f"{registry.url}/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert registry.log_path.is_file()
    assert registry.storage_dir.is_relative_to(registry.workdir)
    assert f'"{registry.host}"' in registry.config_path.read_text()


def test_registry_stops_its_process_and_frees_the_port(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg").start()
    pid, port = reg.pid, reg.port
    assert pid is not None
    assert Path(f"/proc/{pid}").exists()
    reg.stop()
    reg.stop()  # idempotent
    assert not reg.running
    assert reg.pid is None
    # The child was reaped: no zombie with that PID is left (or the PID belongs to someone else now).
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "docker-registry" not in Path(f"/proc/{pid}/cmdline").read_text()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_registry_context_manager(tmp_path: Path) -> None:
    with LocalRegistry(tmp_path / "ctx") as reg, _http() as http:
        assert http.get(f"{reg.url}/v2/").status_code == 200
    assert not reg.running


def test_registry_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    # /bin/false exits at once: the error must say so and carry the log, and nothing may keep running.
    reg = LocalRegistry(tmp_path / "broken", binary=Path("/bin/false"), start_timeout=5.0)
    with pytest.raises(RegistryError, match=r"exited with status 1 .*last lines of"):
        reg.start()
    assert not reg.running


def test_htpasswd_entry_is_bcrypt() -> None:
    line = htpasswd_entry(Credentials(username="someone", password="secret"))
    assert line.startswith("someone:$2")
    assert "\n" not in line


def test_auth_registry_challenges_anonymous_and_accepts_the_test_user(auth_registry: LocalRegistry) -> None:
    assert auth_registry.credentials == Credentials(username=TEST_USERNAME, password=TEST_PASSWORD)
    assert (TEST_USERNAME, TEST_PASSWORD) == ("cribuser", "cribpass")
    url = f"{auth_registry.url}/v2/"
    with _http() as http:
        anonymous = http.get(url)
        wrong = http.get(url, auth=(TEST_USERNAME, "wrong"))
        right = http.get(url, auth=(TEST_USERNAME, TEST_PASSWORD))
        header = http.get(url, headers={"Authorization": auth_registry.credentials.authorization()})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
    assert 'realm="crib-test-registry"' in anonymous.headers["WWW-Authenticate"]
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert header.status_code == 200


def test_auth_registry_serves_the_catalogue_only_with_credentials(
    auth_registry: LocalRegistry,
    auth_images: Catalogue,
) -> None:
    entry = auth_images[img.BUSYBOX]
    assert entry.reference == f"{auth_registry.host}/crib-test/busybox:latest"
    path = f"/v2/{entry.repository}/manifests/{entry.tag}"
    with _http() as http:
        anonymous = http.get(auth_registry.url + path, headers={"Accept": oci.ACCEPT_MANIFESTS})
    assert anonymous.status_code == 401
    with RegistryClient.for_registry(auth_registry) as client:
        assert client.get_manifest(entry.repository, entry.tag).data == entry.artifact.manifest.data
        assert client.get_blob(entry.repository, entry.image_id) == entry.image.config.data


# ---------------------------------------------------------------------------------------- the catalogue


def test_catalogue_has_every_reference(images: Catalogue, registry: LocalRegistry) -> None:
    assert tuple(entry.name for entry in images) == img.CATALOGUE_NAMES
    assert images.host == registry.host
    for entry in images:
        assert entry.reference == f"{registry.host}/{entry.name}"
        assert entry.pinned == f"{registry.host}/{entry.repository}@{entry.manifest_digest}"


def _check_image_round_trip(client: RegistryClient, repository: str, image: oci.Image) -> None:
    manifest = client.get_manifest(repository, image.digest)
    assert manifest.data == image.manifest.data
    assert manifest.media_type == image.media_type
    parsed = manifest.json()
    assert parsed["config"] == image.config.descriptor()
    assert [layer["digest"] for layer in parsed["layers"]] == list(image.layer_digests)
    config = client.get_blob(repository, image.image_id)
    assert config == image.config.data
    config_json = json.loads(config)
    assert config_json["rootfs"] == {"type": "layers", "diff_ids": list(image.diff_ids)}
    assert config_json["architecture"] == image.platform.architecture
    assert len(config_json["history"]) == len(image.layers)
    for layer in image.layers:
        blob = client.get_blob(repository, layer.digest)  # verified against the digest by the client
        assert hashlib.sha256(blob).hexdigest() == layer.digest.removeprefix("sha256:")
        assert len(blob) == layer.size
        assert oci.sha256_digest(oci.decompress(blob, layer.compression)) == layer.diff_id


@pytest.mark.parametrize("name", img.CATALOGUE_NAMES, ids=str)
def test_catalogue_round_trips(name: str, images: Catalogue, registry: LocalRegistry) -> None:
    entry = images[name]
    with RegistryClient.for_registry(registry) as client:
        by_tag = client.get_manifest(entry.repository, entry.tag)
        assert by_tag.data == entry.artifact.manifest.data
        assert by_tag.digest == entry.manifest_digest
        assert by_tag.media_type == entry.media_type
        assert client.get_manifest(entry.repository, entry.manifest_digest).data == by_tag.data
        children = entry.artifact.images if isinstance(entry.artifact, oci.ImageIndex) else (entry.artifact,)
        for image in children:
            _check_image_round_trip(client, entry.repository, image)
    assert entry.image_id == entry.image.config.digest


def test_busybox_variants_share_one_image_id(images: Catalogue) -> None:
    names = (img.BUSYBOX, img.BUSYBOX_OCI, img.BUSYBOX_DOCKER, img.BUSYBOX_ZSTD, img.BUSYBOX_UNCOMPRESSED)
    latest, oci_, docker, zstd, plain = (images[name] for name in names)
    assert latest.manifest_digest == oci_.manifest_digest
    assert len({e.manifest_digest for e in (oci_, docker, zstd, plain)}) == 4
    assert len({e.image_id for e in (oci_, docker, zstd, plain)}) == 1  # same config, same diff_ids
    assert oci_.media_type == oci.MT_OCI_MANIFEST
    assert docker.media_type == oci.MT_DOCKER_MANIFEST
    assert oci_.image.config.media_type == oci.MT_OCI_CONFIG
    assert docker.image.config.media_type == oci.MT_DOCKER_CONFIG
    assert oci_.image.layers[0].media_type == oci.MT_OCI_LAYER_GZIP
    assert docker.image.layers[0].media_type == oci.MT_DOCKER_LAYER_GZIP
    assert zstd.image.layers[0].media_type == oci.MT_OCI_LAYER_ZSTD
    assert plain.image.layers[0].media_type == oci.MT_OCI_LAYER_TAR
    assert oci_.layer_digests == docker.layer_digests  # the same gzip blob under two media types
    assert plain.layer_digests == plain.diff_ids  # uncompressed: blob digest is the diff_id
    assert zstd.image.layers[0].data.startswith(b"\x28\xb5\x2f\xfd")  # zstd frame magic
    gz = oci_.image.layers[0].data
    assert gz[:2] == b"\x1f\x8b"
    assert gz[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert not gz[3] & 0x08  # FNAME not set
    assert oci_.image.config.json()["config"] == {"Env": [oci.DEFAULT_PATH_ENV], "Cmd": ["sh"]}


def test_busybox_layer_is_a_usable_root() -> None:
    tar = img.busybox_layer().tar()
    members = _members(tar)
    assert _file(tar, "bin/busybox") == img.BUSYBOX_BINARY.read_bytes()
    assert members["bin/busybox"].mode == 0o755
    applets = img.busybox_applets()
    wanted = ("sh", "ls", "sleep", "cat", "echo", "id", "env", "true", "false", "wc", "nc", "ps", "wget")
    for applet in wanted:
        assert applet in applets
        assert members[f"bin/{applet}"].issym()
        assert members[f"bin/{applet}"].linkname == "busybox"
    assert members["tmp"].isdir()
    assert stat.S_IMODE(members["tmp"].mode) == 0o1777
    assert members[f"home/{img.TEST_USER}"].uid == img.TEST_UID
    passwd = _file(tar, "etc/passwd").decode()
    group = _file(tar, "etc/group").decode()
    assert "root:x:0:0:" in passwd
    assert f"{img.TEST_USER}:x:{img.TEST_UID}:{img.TEST_GID}:" in passwd
    assert f"nobody:x:{img.NOBODY_UID}:" in passwd
    assert f"{img.TEST_GROUP}:x:{img.TEST_GID}:" in group
    assert f"{img.EXTRA_GROUP}:x:{img.EXTRA_GID}:{img.TEST_USER}" in group
    hard = _members(img.busybox_layer(hardlink_applets=True).tar())
    assert hard["bin/sh"].islnk()
    assert hard["bin/sh"].linkname == "bin/busybox"


def test_layers_image_has_whiteouts_opaque_dirs_and_special_files(images: Catalogue) -> None:
    entry = images[img.LAYERS]
    assert len(entry.layer_digests) == 4
    base, add, delete, special = (_members(layer.tar_bytes()) for layer in entry.image.layers)
    assert "bin/busybox" in base
    assert add["layers/hardlink-b"].islnk()
    assert add["layers/hardlink-b"].linkname == "layers/hardlink-a"
    assert add["layers/symlink"].issym()
    assert (add["layers/owned"].uid, add["layers/owned"].gid) == (img.TEST_UID, img.EXTRA_GID)
    assert "layers/.wh.deleted.txt" in delete
    assert "layers/.wh.removed-dir" in delete
    assert "layers/opaque/.wh..wh..opq" in delete
    assert "layers/opaque/from-layer-3" in delete
    assert stat.S_IMODE(special["layers/setuid"].mode) == 0o4755
    assert special["layers/fifo"].isfifo()
    key, value = img.LAYERS_XATTR
    raw = special["layers/xattr"].pax_headers[f"SCHILY.xattr.{key}"]
    assert raw.encode("utf-8", "surrogateescape") == value
    for path, content in img.LAYERS_EXPECTED_FILES.items():
        holders = [layer for layer in entry.image.layers if path.lstrip("/") in _members(layer.tar_bytes())]
        assert holders, path
        top = holders[-1].tar_bytes()
        if not _members(top)[path.lstrip("/")].islnk():
            assert _file(top, path.lstrip("/")) == content


def test_user_and_config_images_carry_their_settings(images: Catalogue) -> None:
    users = {
        img.USER_UID: "1000",
        img.USER_UIDGID: "1000:2000",
        img.USER_NAME: "cribuser",
        img.USER_NAMEGROUP: "cribuser:extra",
    }
    for name, user in users.items():
        assert images[name].image.config.json()["config"]["User"] == user
    assert len({images[name].image_id for name in users}) == len(users)
    config = images[img.CONFIG].image.config.json()["config"]
    assert config == {
        "Env": [oci.DEFAULT_PATH_ENV, "CRIB_TEST=config", "CRIB_SPACES=a b  c", "CRIB_EMPTY="],
        "Entrypoint": ["/bin/echo", "entrypoint"],
        "Cmd": ["cmd-arg"],
        "WorkingDir": "/srv/work",
        "ExposedPorts": {"8080/tcp": {}, "9090/udp": {}},
        "StopSignal": "SIGUSR1",
        "Volumes": {"/data": {}},
        "Labels": {"org.crib.test": "config", "org.crib.empty": ""},
    }


@pytest.mark.parametrize(
    ("name", "index_type", "manifest_type"),
    [
        (img.MULTIARCH, oci.MT_OCI_INDEX, oci.MT_OCI_MANIFEST),
        (img.MULTIARCH_DOCKER, oci.MT_DOCKER_LIST, oci.MT_DOCKER_MANIFEST),
    ],
    ids=["oci-index", "docker-list"],
)
def test_multiarch_index_lists_two_platforms(
    name: str,
    index_type: str,
    manifest_type: str,
    images: Catalogue,
) -> None:
    entry = images[name]
    assert entry.media_type == index_type
    index = entry.artifact
    assert isinstance(index, oci.ImageIndex)
    listed = index.manifest.json()["manifests"]
    assert [m["platform"] for m in listed] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    assert all(m["mediaType"] == manifest_type for m in listed)
    amd64 = index.image_for(oci.Platform(architecture="amd64"))
    arm64 = index.image_for(oci.Platform(architecture="arm64", variant="v8"))
    assert amd64.image_id != arm64.image_id
    assert arm64.config.json()["variant"] == "v8"
    assert _file(amd64.layers[-1].tar_bytes(), "etc/arch") == b"amd64\n"
    assert _file(arm64.layers[-1].tar_bytes(), "etc/arch") == b"arm64\n"
    assert entry.image.platform == img.host_platform() or entry.image is index.images[0]
    other = images[img.MULTIARCH_DOCKER if name == img.MULTIARCH else img.MULTIARCH]
    assert other.image_id == entry.image_id  # same configs in both index formats


@pytest.mark.parametrize("case", list(img.HOSTILE_CASES), ids=str)
def test_hostile_layers_keep_their_raw_names(case: str, images: Catalogue) -> None:
    entry = images[f"{img.HOSTILE_REPOSITORY}:{case}"]
    names = {
        "dotdot": [f"../{img.HOSTILE_MARKER}"],
        "absolute": [f"/{img.HOSTILE_MARKER}"],
        "symlink-escape": ["link", f"link/{img.HOSTILE_MARKER}"],
        "symlink-relative-escape": ["up", f"up/{img.HOSTILE_MARKER}"],
        "hardlink-absolute": ["passwd-link"],
        "hardlink-dotdot": ["outside-link"],
    }[case]
    members = entry.image.layers[-1].members()
    assert [m.name for m in members] == names
    if case == "hardlink-absolute":
        assert members[0].islnk()
        assert members[0].linkname == "/etc/passwd"
    if case == "symlink-escape":
        assert members[0].issym()
        assert members[0].linkname == "/tmp"


def test_layer_refuses_unsafe_names_outside_raw() -> None:
    for bad in ("../x", "a/../../x", "/", ""):
        with pytest.raises(ValueError, match="leaves the root"):
            oci.Layer().file(bad, "x")
    with pytest.raises(ValueError, match="not a regular file"):
        oci.Layer().hardlink("a", "/etc/passwd")
    with pytest.raises(ValueError, match="zstd"):
        oci.layer_media_type(oci.Format.DOCKER, oci.Compression.ZSTD)


def test_layer_entries_cover_every_type() -> None:
    layer = (
        oci.Layer()
        .dir("d", mode=0o2750, uid=5, gid=6)
        .file("d/f", b"data", mode=0o4711, uid=7, gid=8, mtime=1234)
        .symlink("d/s", "f")
        .hardlink("d/h", "d/f")
        .char_device("dev/c", 1, 3)
        .block_device("dev/b", 7, 0)
        .fifo("d/p")
        .file("d/x", "x", xattrs={"user.a": "1", "security.capability": b"\x01\x00"})
        .whiteout("gone")
        .opaque("d")
    )
    members = _members(layer.tar())
    assert list(members) == [
        "d", "d/f", "d/s", "d/h", "dev", "dev/c", "dev/b", "d/p", "d/x", ".wh.gone", "d/.wh..wh..opq",
    ]  # fmt: skip
    assert (stat.S_IMODE(members["d"].mode), members["d"].uid, members["d"].gid) == (0o2750, 5, 6)
    f = members["d/f"]
    assert (stat.S_IMODE(f.mode), f.uid, f.gid, f.mtime, f.size) == (0o4711, 7, 8, 1234, 4)
    assert members["dev/c"].ischr()
    assert (members["dev/c"].devmajor, members["dev/c"].devminor) == (1, 3)
    assert members["dev/b"].isblk()
    assert members["d/x"].pax_headers["SCHILY.xattr.user.a"] == "1"
    assert members["d/s"].mtime == oci.FIXED_MTIME


# ---------------------------------------------------------------------------------------- determinism


def _digests(artifact: oci.Image | oci.ImageIndex) -> list[str]:
    return [blob.digest for blob in artifact.all_blobs()]


def test_builds_are_deterministic() -> None:
    first, second = img.build_catalogue(), img.build_catalogue()
    assert list(first) == list(second)
    for name in first:
        assert _digests(first[name]) == _digests(second[name]), name
    cached = img.catalogue_artifacts()
    assert {n: a.digest for n, a in cached.items()} == {n: a.digest for n, a in first.items()}
    assert img.busybox_layer().build().data == img.busybox_layer().build().data
    assert img.busybox_layer().build(compression=oci.Compression.ZSTD).digest == (
        img.busybox_layer().build(compression=oci.Compression.ZSTD).digest
    )


def test_small_benchmark_image_is_deterministic_and_mixed() -> None:
    def build() -> oci.Image:
        return img.benchmark_image(total_size=6 * img.MiB, layer_count=3, file_size=img.MiB)

    image = build()
    assert len(image.layers) == 3
    assert image.digest == build().digest
    tars = [layer.tar_bytes() for layer in image.layers]
    assert 0.9 * 6 * img.MiB <= sum(len(tar) for tar in tars) <= 1.1 * 6 * img.MiB
    data = image.layers[1]
    assert data.size < len(tars[1])  # the text files compress
    assert data.size > len(tars[1]) // 4  # the random ones do not
    names = [m.name for m in data.members() if m.isfile()]
    assert any(n.endswith(".txt") for n in names)
    assert any(n.endswith(".bin") for n in names)


# ---------------------------------------------------------------------------------------- on-disk forms


def _check_oci_layout(root: Path, expected: Mapping[str, oci.Image | oci.ImageIndex]) -> None:
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == oci.MT_OCI_INDEX
    refs = {m["annotations"][oci.ANNOTATION_REF_NAME]: m for m in index["manifests"]}
    assert set(refs) == set(expected)

    def blob(descriptor: Mapping[str, object]) -> bytes:
        digest = str(descriptor["digest"])
        data = (root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        assert oci.sha256_digest(data) == digest
        assert len(data) == descriptor["size"]
        return data

    def walk(descriptor: Mapping[str, object]) -> int:
        document = json.loads(blob(descriptor))
        assert document["mediaType"] == descriptor["mediaType"]
        if descriptor["mediaType"] in (oci.MT_OCI_INDEX, oci.MT_DOCKER_LIST):
            return sum(walk(child) for child in document["manifests"])
        config = json.loads(blob(document["config"]))
        diff_ids = []
        for layer in document["layers"]:
            compression = {
                oci.MT_OCI_LAYER_GZIP: oci.Compression.GZIP,
                oci.MT_DOCKER_LAYER_GZIP: oci.Compression.GZIP,
                oci.MT_OCI_LAYER_ZSTD: oci.Compression.ZSTD,
            }.get(layer["mediaType"], oci.Compression.NONE)
            diff_ids.append(oci.sha256_digest(oci.decompress(blob(layer), compression)))
        assert config["rootfs"]["diff_ids"] == diff_ids
        return 1

    for ref, artifact in expected.items():
        assert refs[ref]["digest"] == artifact.digest
        images_seen = walk(refs[ref])
        assert images_seen == (len(artifact.images) if isinstance(artifact, oci.ImageIndex) else 1)


def _layout_refs() -> dict[str, oci.Image | oci.ImageIndex]:
    artifacts = img.catalogue_artifacts()
    return {
        "latest": artifacts[img.BUSYBOX],
        "zstd": artifacts[img.BUSYBOX_ZSTD],
        "layers": artifacts[img.LAYERS],
        "multiarch": artifacts[img.MULTIARCH],
        "docker": artifacts[img.BUSYBOX_DOCKER],
    }


def test_oci_layout_directory_is_self_consistent(tmp_path: Path) -> None:
    refs = _layout_refs()
    root = oci.write_oci_layout(tmp_path / "layout", refs)
    _check_oci_layout(root, refs)
    with pytest.raises(FileExistsError):
        oci.write_oci_layout(root, refs)


def test_oci_layout_tar_is_self_consistent_and_deterministic(tmp_path: Path) -> None:
    refs = _layout_refs()
    first = oci.write_oci_layout_tar(tmp_path / "one.tar", refs)
    second = oci.write_oci_layout_tar(tmp_path / "two.tar", refs)
    assert first.read_bytes() == second.read_bytes()
    unpacked = tmp_path / "unpacked"
    with tarfile.open(first) as tar:
        tar.extractall(unpacked, filter="data")
    _check_oci_layout(unpacked, refs)


def test_docker_archive_is_self_consistent(tmp_path: Path) -> None:
    image = img.catalogue_artifacts()[img.LAYERS]
    assert isinstance(image, oci.Image)
    path = oci.write_docker_archive(tmp_path / "image.tar", image, repo_tags=["crib-test/layers:latest"])
    with tarfile.open(path) as tar:
        names = set(tar.getnames())

        def read(name: str) -> bytes:
            member = tar.extractfile(name)
            assert member is not None, name
            return member.read()

        manifest = json.loads(read("manifest.json"))
        assert len(manifest) == 1
        assert manifest[0]["RepoTags"] == ["crib-test/layers:latest"]
        config = read(manifest[0]["Config"])
        assert oci.sha256_digest(config) == image.image_id
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        assert [oci.sha256_digest(read(layer)) for layer in manifest[0]["Layers"]] == diff_ids
        assert set(manifest[0]["Layers"]) <= names
        repositories = json.loads(read("repositories"))
        assert repositories == {"crib-test/layers": {"latest": manifest[0]["Layers"][-1].split("/")[0]}}


def test_gzip_layers_decompress_with_the_stdlib(images: Catalogue) -> None:
    for entry in images:
        for layer in entry.image.layers:
            if layer.compression is oci.Compression.GZIP:
                assert oci.sha256_digest(gzip.decompress(layer.data)) == layer.diff_id
