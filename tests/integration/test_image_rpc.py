"""The CRI ImageService through a real crib daemon: what kubelet, crictl and critest see.

The shapes asserted here are critest's (pkg/validate/image*.go): repo tags and digests, ids, size, the
user of USER images, status by every kind of reference, an absent image's empty status, removal by id,
tag or digest, concurrent removals, a pull cut short by the client's deadline.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.images import Catalogue
from tests.fixtures.registry import TEST_PASSWORD, TEST_USERNAME
from tests.fixtures.registry_proxy import RegistryProxy
from tests.integration.image_helpers import stored


def spec(ref: str) -> Any:
    return api.ImageSpec(image=ref)


def pull(d: CribDaemon, ref: str, auth: Any = None, timeout: float = 120) -> str:
    request = api.PullImageRequest(image=spec(ref), auth=auth,
                                   sandbox_config=api.PodSandboxConfig(
                                       metadata=api.PodSandboxMetadata(name="p", namespace="ns")))
    return str(d.images.PullImage(request, timeout=timeout).image_ref)


def status(d: CribDaemon, ref: str, verbose: bool = False) -> Any:
    return d.images.ImageStatus(api.ImageStatusRequest(image=spec(ref), verbose=verbose), timeout=10)


def remove(d: CribDaemon, ref: str) -> None:
    d.images.RemoveImage(api.RemoveImageRequest(image=spec(ref)), timeout=30)


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


@pytest.fixture
def daemon(crib_factory: Callable[..., CribDaemon], tmp_path: Path) -> CribDaemon:
    return crib_factory({"image": {"registries_conf": str(tmp_path / "registries.conf"), "certs_dir": ""}})


def test_pull_status_list_remove(daemon: CribDaemon, images: Catalogue) -> None:
    entry = images[img.LAYERS]
    image_id = pull(daemon, entry.reference)
    assert image_id == entry.image_id
    image = status(daemon, entry.reference).image
    assert image.id == image_id
    assert list(image.repo_tags) == [entry.reference]
    assert list(image.repo_digests) == [entry.pinned]
    assert image.size == entry.image.config.size + sum(layer.size for layer in entry.image.layers)
    assert image.spec.image == image_id
    assert not image.pinned
    assert not image.HasField("uid")
    assert image.username == ""
    # Status by id, by tag and by digest is the same message (critest "all kinds of references").
    for ref in (image_id, entry.pinned, image_id.split(":")[1][:13]):
        assert status(daemon, ref).image == image
    listed = daemon.images.ListImages(api.ListImagesRequest(), timeout=10).images
    assert [i.id for i in listed] == [image_id]
    by_digest = api.ImageFilter(image=spec(entry.pinned))
    filtered = daemon.images.ListImages(api.ListImagesRequest(filter=by_digest))
    assert [i.id for i in filtered.images] == [image_id]
    assert list(daemon.images.ListImages(api.ListImagesRequest(
        filter=api.ImageFilter(image=spec("absent/image")))).images) == []
    stream = daemon.images.StreamImages(api.StreamImagesRequest(), timeout=10)
    streamed = [i.id for r in stream for i in r.images]
    assert streamed == [image_id]
    remove(daemon, entry.reference)  # by tag: the whole image goes, as in containerd
    assert not status(daemon, image_id).HasField("image")
    assert not status(daemon, entry.reference).HasField("image")
    remove(daemon, image_id)  # already gone: fine
    remove(daemon, image_id.split(":")[1])  # a bare hex id that names nothing (critest Idempotence)
    remove(daemon, "0" * 64)
    assert not status(daemon, "0" * 64).HasField("image")
    assert list(daemon.images.ListImages(api.ListImagesRequest()).images) == []
    assert list(daemon.images.StreamImages(api.StreamImagesRequest(), timeout=10)) == []
    assert stored(daemon.root) == {"blobs": [], "layers": [], "tmp": []}


def test_pull_by_digest_and_remove_by_digest(daemon: CribDaemon, images: Catalogue) -> None:
    entry = images[img.MULTIARCH_DOCKER]
    image_id = pull(daemon, entry.pinned)
    image = status(daemon, entry.pinned).image
    assert (list(image.repo_tags), list(image.repo_digests)) == ([], [entry.pinned])
    assert image.id == image_id == entry.image_id
    remove(daemon, entry.pinned)
    assert not status(daemon, image_id).HasField("image")


@pytest.mark.parametrize(("name", "uid", "username"), [
    (img.USER_UID, img.TEST_UID, ""),
    (img.USER_NAME, None, img.TEST_USER),
    (img.USER_UIDGID, img.TEST_UID, ""),
    (img.USER_NAMEGROUP, None, img.TEST_USER),
], ids=["uid", "name", "uid-gid", "name-group"])
def test_user_of_the_image(daemon: CribDaemon, images: Catalogue, name: str, uid: int | None,
                           username: str) -> None:
    pull(daemon, images.reference(name))
    image = status(daemon, images.reference(name)).image
    assert image.HasField("uid") is (uid is not None)
    assert image.uid.value == (uid or 0)
    assert image.username == username


def test_verbose_status_carries_config_manifest_and_layers(daemon: CribDaemon, images: Catalogue) -> None:
    entry = images[img.CONFIG]
    pull(daemon, entry.reference)
    resp = status(daemon, entry.reference, verbose=True)
    info = json.loads(resp.info["info"])
    assert info["id"] == entry.image_id
    assert info["manifestDigest"] == entry.manifest_digest
    assert info["imageSpec"]["config"]["Entrypoint"] == ["/bin/echo", "entrypoint"]
    assert [layer["digest"] for layer in info["layers"]] == list(entry.layer_digests)
    assert [layer["diffID"] for layer in info["layers"]] == list(entry.diff_ids)
    assert all(Path(layer["dir"]).is_dir() for layer in info["layers"])
    assert status(daemon, entry.reference).info == {}


def test_bad_requests_get_invalid_argument(daemon: CribDaemon) -> None:
    code, details = code_of(lambda: pull(daemon, "Not/A Reference"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "white space" in details
    code, details = code_of(lambda: pull(daemon, ""))
    assert (code, "image.image is empty" in details) == (grpc.StatusCode.INVALID_ARGUMENT, True)
    code, _ = code_of(lambda: status(daemon, "busybox@sha256:short"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert not status(daemon, "docker.io/library/never-pulled:1").HasField("image")


def test_credentials_from_the_request(daemon: CribDaemon, auth_images: Catalogue) -> None:
    ref = auth_images.reference(img.BUSYBOX)
    code, details = code_of(lambda: pull(daemon, ref))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "requires a username and password" in details
    code, details = code_of(lambda: pull(daemon, ref, api.AuthConfig(username=TEST_USERNAME, password="bad")))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "bad" not in details.replace("registry", "")
    auth = base64.b64encode(f"{TEST_USERNAME}:{TEST_PASSWORD}".encode()).decode()
    assert pull(daemon, ref, api.AuthConfig(auth=auth)) == auth_images[img.BUSYBOX].image_id
    assert TEST_PASSWORD not in daemon.log_path.read_text()


def test_concurrent_removals_all_succeed(daemon: CribDaemon, images: Catalogue) -> None:
    image_id = pull(daemon, images.reference(img.BUSYBOX))

    def remove_and_look() -> bool:
        remove(daemon, image_id)
        return status(daemon, image_id).HasField("image")

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        found = list(pool.map(lambda _: remove_and_look(), range(5)))
    assert found == [False] * 5


def test_client_deadline_cancels_the_pull_cleanly(daemon: CribDaemon, images: Catalogue) -> None:
    code, _ = code_of(lambda: pull(daemon, images.reference(img.LAYERS), timeout=0.001))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert pull(daemon, images.reference(img.LAYERS)) == images[img.LAYERS].image_id


def test_image_fs_info(daemon: CribDaemon, images: Catalogue) -> None:
    pull(daemon, images.reference(img.BUSYBOX))
    resp = daemon.images.ImageFsInfo(api.ImageFsInfoRequest(), timeout=10)
    (image_fs,) = resp.image_filesystems
    (container_fs,) = resp.container_filesystems
    assert image_fs.fs_id.mountpoint == str(daemon.root / "layers")
    assert image_fs.used_bytes.value > 2_000_000
    assert image_fs.inodes_used.value > 290
    assert container_fs.fs_id.mountpoint == str(daemon.root / "containers")
    assert abs(image_fs.timestamp - time.time_ns()) < 60 * 10**9


def test_pinned_images_and_restart(crib_factory: Callable[..., CribDaemon], tmp_path: Path,
                                   images: Catalogue) -> None:
    pinned = images.reference(img.USER_UID)
    daemon = crib_factory({"image": {"registries_conf": str(tmp_path / "none.conf"),
                                     "pinned_images": [pinned]}})
    pull(daemon, pinned)
    pull(daemon, images.reference(img.BUSYBOX))
    daemon.restart()
    listed = {i.repo_tags[0]: i.pinned for i in daemon.images.ListImages(api.ListImagesRequest()).images}
    assert listed == {pinned: True, images.reference(img.BUSYBOX): False}


def test_daemon_killed_mid_pull_leaves_nothing(crib_factory: Callable[..., CribDaemon], tmp_path: Path,
                                               images: Catalogue, registry_proxy: RegistryProxy) -> None:
    daemon = crib_factory({"image": {"registries_conf": str(tmp_path / "none.conf")}})
    entry = images[img.LAYERS]
    registry_proxy.stall.add(entry.layer_digests[0])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(pull, daemon, registry_proxy.reference(img.LAYERS))
        deadline = time.monotonic() + 30
        while registry_proxy.blob_gets(entry.layer_digests[0]) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # some of the layers are unpacked, the big one is half-way
        daemon.kill()
        with pytest.raises(grpc.RpcError):
            pending.result(timeout=30)
    registry_proxy.stall.clear()
    daemon.start()
    assert list(daemon.images.ListImages(api.ListImagesRequest()).images) == []
    assert stored(daemon.root) == {"blobs": [], "layers": [], "tmp": []}
    assert pull(daemon, registry_proxy.reference(img.LAYERS)) == entry.image_id
    assert "removed leftovers of interrupted pulls" in daemon.log_path.read_text()
