"""Manifest and index parsing, schema1 refusal, platform selection, image config fields."""

from __future__ import annotations

import json

import pytest

from crib.errors import NotFound
from crib.images import manifest as mf
from crib.images.manifest import BadImage, Descriptor, Platform
from crib.state.records import ImageConfig

D = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def doc(value: object) -> bytes:
    return json.dumps(value).encode()


def image_manifest(layer_type: str = "application/vnd.oci.image.layer.v1.tar+gzip",
                   config_type: str = mf.MT_OCI_CONFIG) -> dict[str, object]:
    return {"schemaVersion": 2, "mediaType": mf.MT_OCI_MANIFEST,
            "config": {"mediaType": config_type, "digest": D, "size": 10},
            "layers": [{"mediaType": layer_type, "digest": D2, "size": 20}]}


@pytest.mark.parametrize(("data", "header", "expected"), [
    (doc(image_manifest()), "", mf.MT_OCI_MANIFEST),
    (doc({"schemaVersion": 2, "manifests": []}), "", mf.MT_OCI_INDEX),
    (doc({"schemaVersion": 2, "config": {}, "layers": []}), mf.MT_DOCKER_MANIFEST, mf.MT_DOCKER_MANIFEST),
    (doc({"schemaVersion": 2, "mediaType": mf.MT_DOCKER_LIST, "manifests": []}), "", mf.MT_DOCKER_LIST),
], ids=["oci", "oci-index-by-shape", "docker-by-header", "docker-list"])
def test_media_type_of(data: bytes, header: str, expected: str) -> None:
    assert mf.media_type_of(data, header, "m") == expected


@pytest.mark.parametrize(("data", "header", "message"), [
    (doc({"schemaVersion": 1, "name": "x", "fsLayers": []}), mf.MT_DOCKER_SCHEMA1_SIGNED, "schema1"),
    (doc({"schemaVersion": 2}), "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "not a container"),
    (b"{not json", "", "not valid JSON"),
    (b"[1]", "", "not a JSON object"),
], ids=["schema1", "artifact", "json", "array"])
def test_media_type_refusals(data: bytes, header: str, message: str) -> None:
    with pytest.raises(BadImage, match=message):
        mf.media_type_of(data, header, "image x")


def test_parse_manifest_checks_config_and_layers() -> None:
    m = mf.parse_manifest(doc(image_manifest()), mf.MT_OCI_MANIFEST, "m")
    assert m.config == Descriptor(media_type=mf.MT_OCI_CONFIG, digest=D, size=10)
    assert [layer.digest for layer in m.layers] == [D2]
    with pytest.raises(BadImage, match="non-distributable"):
        mf.parse_manifest(doc(image_manifest("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")),
                          mf.MT_OCI_MANIFEST, "m")
    with pytest.raises(BadImage, match="foreign"):
        mf.parse_manifest(doc(image_manifest("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")),
                          mf.MT_OCI_MANIFEST, "m")
    with pytest.raises(BadImage, match="unsupported media type"):
        mf.parse_manifest(doc(image_manifest("application/x-weird")), mf.MT_OCI_MANIFEST, "m")
    with pytest.raises(BadImage, match="artifact"):
        mf.parse_manifest(doc(image_manifest(config_type="application/vnd.cncf.helm.config.v1+json")),
                          mf.MT_OCI_MANIFEST, "m")
    broken = image_manifest()
    broken["layers"] = [{"mediaType": "x", "digest": "sha256:short", "size": 1}]
    with pytest.raises(BadImage, match="sha256"):
        mf.parse_manifest(doc(broken), mf.MT_OCI_MANIFEST, "m")


def entry(arch: str, variant: str = "", os: str = "linux", digest: str = D,
          media_type: str = mf.MT_OCI_MANIFEST) -> Descriptor:
    plat = {"os": os, "architecture": arch}
    if variant:
        plat["variant"] = variant
    return Descriptor(media_type=media_type, digest=digest, size=1, platform=plat)


@pytest.mark.parametrize(("entries", "want", "index"), [
    ([entry("arm64", "v8"), entry("amd64")], Platform(os="linux", architecture="amd64"), 1),
    ([entry("arm64"), entry("arm64", "v8")], Platform(os="linux", architecture="arm64", variant="v8"), 1),
    ([entry("arm64")], Platform(os="linux", architecture="arm64", variant="v8"), 0),
    ([entry("arm", "v6"), entry("arm", "v7")], Platform(os="linux", architecture="arm", variant="v7"), 1),
    ([entry("amd64", os="windows"), entry("amd64")], Platform(os="linux", architecture="amd64"), 1),
    ([entry("unknown", os="unknown"), entry("amd64")],
     Platform(os="linux", architecture="amd64"), 1),
], ids=["amd64", "exact-variant", "variant-less", "arm-v7", "not-windows", "attestation"])
def test_select_platform(entries: list[Descriptor], want: Platform, index: int) -> None:
    assert mf.select_platform(entries, "idx", want) is entries[index]


def test_select_platform_says_what_is_offered() -> None:
    with pytest.raises(NotFound, match=r"linux/amd64 \(it offers: linux/arm64/v8, linux/s390x\)"):
        mf.select_platform([entry("arm64", "v8"), entry("s390x")], "idx",
                           Platform(os="linux", architecture="amd64"))


def test_parse_config() -> None:
    data = doc({"architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
                "config": {"User": "www-data:1004", "Env": ["A=1"], "Entrypoint": ["/e"], "Cmd": ["c"],
                           "WorkingDir": "/w", "Volumes": {"/v": {}}, "ExposedPorts": {"80/tcp": {}},
                           "StopSignal": "SIGUSR1", "Labels": {"k": "v"}},
                "rootfs": {"type": "layers", "diff_ids": [D, D2]}})
    parsed = mf.parse_config(data, "c")
    assert parsed.diff_ids == (D, D2)
    assert parsed.created == "2023-11-14T22:13:20Z"
    assert parsed.config == ImageConfig(user="www-data:1004", env=("A=1",), entrypoint=("/e",), cmd=("c",),
                                        working_dir="/w", volumes=("/v",), exposed_ports=("80/tcp",),
                                        stop_signal="SIGUSR1", labels={"k": "v"}, os="linux",
                                        architecture="amd64")
    minimal = mf.parse_config(doc({"rootfs": {"diff_ids": []}, "config": None}), "c")
    assert minimal.config == ImageConfig()
    with pytest.raises(BadImage, match="diff_ids"):
        mf.parse_config(doc({"config": {}}), "c")


@pytest.mark.parametrize(("user", "expected"), [
    ("", (None, "")), ("1002", (1002, "")), ("www-data", (None, "www-data")), ("1003:1004", (1003, "")),
    ("www-data:1004", (None, "www-data")), ("0", (0, "")),
], ids=["none", "uid", "name", "uid-gid", "name-gid", "root"])
def test_user_of(user: str, expected: tuple[int | None, str]) -> None:
    assert mf.user_of(ImageConfig(user=user)) == expected
