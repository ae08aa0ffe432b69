"""Pulls through broken networks and misbehaving registries (the fault proxy in front of the real registry),
mirrors from registries.conf, and every auth flavour.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from crib.errors import DeadlineExceeded, PermissionDenied, Unauthenticated, Unavailable
from crib.images import Credentials
from crib.images.blobs import ContentError
from tests.fixtures import images as img
from tests.fixtures.images import Catalogue
from tests.fixtures.registry import TEST_PASSWORD, TEST_USERNAME, LocalRegistry, free_port
from tests.fixtures.registry_proxy import Cut, RegistryProxy, Throttle, TokenAuth
from tests.integration.image_helpers import service, stored

EMPTY = {"blobs": [], "layers": [], "tmp": []}


def big_layer(entry: object) -> str:
    """The busybox layer: the largest blob of the small images (about 1 MB)."""
    return entry.layer_digests[0]  # type: ignore[attr-defined]


async def test_connection_cut_mid_blob_is_resumed(tmp_path: Path, images: Catalogue,
                                                  registry_proxy: RegistryProxy) -> None:
    entry = images[img.BUSYBOX]
    layer = big_layer(entry)
    registry_proxy.cut[layer] = Cut(after=300_000, times=2)
    async with service(tmp_path) as svc:
        rec = await svc.pull(registry_proxy.reference(img.BUSYBOX))
    assert rec.id == entry.image_id
    gets = [s for s in registry_proxy.requests if s.path.endswith(layer) and s.method == "GET"]
    assert [s.range for s in gets] == ["", "bytes=300000-", "bytes=600000-"]


async def test_resume_without_range_support(tmp_path: Path, images: Catalogue,
                                            registry_proxy: RegistryProxy) -> None:
    layer = big_layer(images[img.BUSYBOX])
    registry_proxy.cut[layer] = Cut(after=400_000, times=1)
    registry_proxy.ignore_range = True
    async with service(tmp_path) as svc:
        rec = await svc.pull(registry_proxy.reference(img.BUSYBOX))
        assert rec.id == images[img.BUSYBOX].image_id


async def test_permanently_broken_blob_fails_cleanly(tmp_path: Path, images: Catalogue,
                                                     registry_proxy: RegistryProxy) -> None:
    layer = big_layer(images[img.BUSYBOX])
    registry_proxy.cut[layer] = Cut(after=0, times=None)
    async with service(tmp_path) as svc:
        with pytest.raises(Unavailable, match=f"download of {layer} .* keeps failing at 0 of"):
            await svc.pull(registry_proxy.reference(img.BUSYBOX))
        assert svc.list() == []
    assert stored(tmp_path / "root") == EMPTY


async def test_blob_with_the_wrong_content_is_not_stored(tmp_path: Path, images: Catalogue,
                                                         registry_proxy: RegistryProxy) -> None:
    entry = images[img.LAYERS]
    victim = entry.image.layers[1]
    other = entry.image.layers[2]
    registry_proxy.corrupt[victim.digest] = other.data + b"\0" * max(0, victim.size - other.size)
    async with service(tmp_path) as svc:
        with pytest.raises(ContentError, match=f"{victim.digest}.*does not match its digest"):
            await svc.pull(registry_proxy.reference(img.LAYERS))
        assert svc.list() == []
    assert stored(tmp_path / "root") == EMPTY


async def test_garbage_blob_is_reported_as_a_digest_mismatch(tmp_path: Path, images: Catalogue,
                                                             registry_proxy: RegistryProxy) -> None:
    layer = images[img.BUSYBOX].image.layers[0]
    registry_proxy.corrupt[layer.digest] = layer.data[:1000] + b"\xff" * (layer.size - 1000)
    async with service(tmp_path) as svc:
        with pytest.raises(ContentError, match=f"{layer.digest}.*does not match its digest"):
            await svc.pull(registry_proxy.reference(img.BUSYBOX))
    assert stored(tmp_path / "root") == EMPTY


async def test_wrong_config_blob_is_refused(tmp_path: Path, images: Catalogue,
                                            registry_proxy: RegistryProxy) -> None:
    entry = images[img.CONFIG]
    registry_proxy.corrupt[entry.image_id] = entry.image.config.data.replace(b"SIGUSR1", b"SIGKILL")
    async with service(tmp_path) as svc:
        with pytest.raises(ContentError, match="config"):
            await svc.pull(registry_proxy.reference(img.CONFIG))
    assert stored(tmp_path / "root") == EMPTY


async def test_server_errors_are_retried(tmp_path: Path, images: Catalogue,
                                         registry_proxy: RegistryProxy) -> None:
    registry_proxy.status["/manifests/"] = (503, 2)
    registry_proxy.status["/blobs/"] = (500, 1)
    async with service(tmp_path) as svc:
        rec = await svc.pull(registry_proxy.reference(img.BUSYBOX))
    assert rec.id == images[img.BUSYBOX].image_id


async def test_stalled_pull_is_cancelled_with_a_clear_error(tmp_path: Path, images: Catalogue,
                                                            registry_proxy: RegistryProxy) -> None:
    registry_proxy.stall.add(big_layer(images[img.BUSYBOX]))
    started = time.monotonic()
    async with service(tmp_path, pull_progress_timeout=1.5) as svc:
        with pytest.raises(DeadlineExceeded, match=r"no progress for [\d.]+s .*image.pull_progress_timeout"):
            await svc.pull(registry_proxy.reference(img.BUSYBOX))
        assert svc.list() == []
    assert time.monotonic() - started < 15
    assert stored(tmp_path / "root") == EMPTY


async def test_slow_pull_that_keeps_moving_is_never_cut(tmp_path: Path, images: Catalogue,
                                                        registry_proxy: RegistryProxy) -> None:
    entry = images[img.LAYERS]
    small = min(entry.image.layers, key=lambda layer: layer.size)
    # About 3 s in total for this blob, with a progress timeout of 1 s: slow, but never idle for 1 s.
    registry_proxy.throttle[small.digest] = Throttle(chunk=max(1, small.size // 12), interval=0.25)
    async with service(tmp_path, pull_progress_timeout=1.0) as svc:
        started = time.monotonic()
        rec = await svc.pull(registry_proxy.reference(img.LAYERS))
        assert time.monotonic() - started > 2.0
    assert rec.id == entry.image_id


# ------------------------------------------------------------------------------------------ mirrors


def write_conf(tmp_path: Path, text: str) -> None:
    (tmp_path / "registries.conf").write_text(text)


async def test_mirrors_are_tried_in_order_then_the_registry(tmp_path: Path, images: Catalogue,
                                                            registry: LocalRegistry,
                                                            registry_proxy: RegistryProxy) -> None:
    dead = f"127.0.0.1:{free_port()}"
    registry_proxy.status["/manifests/"] = (404, None)  # a mirror that does not have the image
    write_conf(tmp_path, f"""
[[registry]]
prefix = "mirror.test"
location = "{registry.host}"
[[registry.mirror]]
location = "{dead}"
[[registry.mirror]]
location = "{registry_proxy.host}"
""")
    async with service(tmp_path) as svc:
        rec = await svc.pull("mirror.test/crib-test/busybox:latest")
        assert rec.id == images[img.BUSYBOX].image_id
        assert rec.repo_tags == ("mirror.test/crib-test/busybox:latest",)  # the name asked for
        assert svc.resolve("mirror.test/crib-test/busybox").id == rec.id
    assert any("/manifests/latest" in s.path for s in registry_proxy.requests)  # it was tried


async def test_a_working_mirror_is_used_without_the_registry(tmp_path: Path, images: Catalogue,
                                                             registry_proxy: RegistryProxy) -> None:
    dead = f"127.0.0.1:{free_port()}"
    write_conf(tmp_path, f"""
[[registry]]
prefix = "registry.k8s.io"
location = "{dead}"
[[registry.mirror]]
location = "{registry_proxy.host}/crib-test"
insecure = true
""")
    async with service(tmp_path) as svc:
        rec = await svc.pull("registry.k8s.io/busybox:latest")
    assert rec.id == images[img.BUSYBOX].image_id
    assert registry_proxy.requests[0].path == "/v2/crib-test/busybox/manifests/latest"


async def test_all_endpoints_failing_reports_each(tmp_path: Path, images: Catalogue) -> None:
    dead1, dead2 = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    write_conf(tmp_path, f'[[registry]]\nprefix = "x.test"\nlocation = "{dead1}"\n'
                         f'[[registry.mirror]]\nlocation = "{dead2}"\n')
    async with service(tmp_path) as svc:
        with pytest.raises(Unavailable, match=f"{dead1}.*earlier: mirror {dead2}"):
            await svc.pull("x.test/a:b")


async def test_blocked_registry_is_refused(tmp_path: Path, images: Catalogue) -> None:
    write_conf(tmp_path, f'[[registry]]\nlocation = "{images.host}"\nblocked = true\n')
    async with service(tmp_path) as svc:
        with pytest.raises(PermissionDenied, match="blocked"):
            await svc.pull(images.reference(img.BUSYBOX))


async def test_registries_conf_is_reread_when_it_changes(tmp_path: Path, images: Catalogue) -> None:
    write_conf(tmp_path, "")
    async with service(tmp_path) as svc:
        await svc.pull(images.reference(img.BUSYBOX))
        write_conf(tmp_path, f'[[registry]]\nlocation = "{images.host}"\nblocked = true\n\n# changed\n')
        with pytest.raises(PermissionDenied, match="blocked"):
            await svc.pull(images.reference(img.BUSYBOX))


# --------------------------------------------------------------------------------------------- auth


async def test_basic_auth_registry(tmp_path: Path, auth_images: Catalogue) -> None:
    ref = auth_images.reference(img.BUSYBOX)
    async with service(tmp_path) as svc:
        with pytest.raises(Unauthenticated, match="requires a username and password"):
            await svc.pull(ref)
        refused = f"refused the credentials of user '{TEST_USERNAME}'"
        with pytest.raises(PermissionDenied, match=refused) as err:
            await svc.pull(ref, Credentials(username=TEST_USERNAME, password="wrong-password"))
        assert "wrong-password" not in str(err.value)
        rec = await svc.pull(ref, Credentials(username=TEST_USERNAME, password=TEST_PASSWORD))
        assert rec.id == auth_images[img.BUSYBOX].image_id


async def test_node_credentials_from_a_docker_config(tmp_path: Path, auth_images: Catalogue) -> None:
    auth = base64.b64encode(f"{TEST_USERNAME}:{TEST_PASSWORD}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {f"http://{auth_images.host}": {"auth": auth}}}))
    async with service(tmp_path, auth_file=str(config)) as svc:
        rec = await svc.pull(auth_images.reference(img.USER_UID))
    assert rec.id == auth_images[img.USER_UID].image_id


@pytest.fixture
def token_proxy(registry: LocalRegistry):
    auth = TokenAuth(users={"alice": "wonderland"}, refresh_tokens={"refresh-alice"})
    with RegistryProxy(registry, token_auth=auth) as proxy:
        yield proxy


async def test_token_auth_flow(tmp_path: Path, images: Catalogue, token_proxy: RegistryProxy) -> None:
    ref = token_proxy.reference(img.LAYERS)
    async with service(tmp_path) as svc:
        with pytest.raises(Unauthenticated, match="requires credentials"):
            await svc.pull(ref)
        with pytest.raises(PermissionDenied, match="refused the credentials of user 'alice'"):
            await svc.pull(ref, Credentials(username="alice", password="nope"))
        rec = await svc.pull(ref, Credentials(username="alice", password="wonderland"))
        assert rec.id == images[img.LAYERS].image_id
        by_refresh = await svc.pull(token_proxy.reference(img.BUSYBOX),
                                    Credentials(identity_token="refresh-alice"))
        assert by_refresh.id == images[img.BUSYBOX].image_id
    authorized = [s for s in token_proxy.requests
                  if s.path.startswith("/v2/crib-test/layers/") and s.authorized]
    assert authorized  # blobs and manifests went with the bearer token


async def test_anonymous_token_auth(tmp_path: Path, images: Catalogue, registry: LocalRegistry) -> None:
    with RegistryProxy(registry, token_auth=TokenAuth(allow_anonymous=True)) as proxy:
        async with service(tmp_path) as svc:
            rec = await svc.pull(proxy.reference(img.CONFIG))
        assert rec.id == images[img.CONFIG].image_id
        assert proxy.token_requests >= 1
