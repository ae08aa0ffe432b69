"""The registry client against a hand-written fake registry behind httpx.MockTransport (httpx's own seam).

The real registry, the token server and connection faults are exercised in tests/integration; here the
protocol decisions are pinned down one by one: which challenge leads to what, when credentials are sent,
which failures are retried, how a broken download resumes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from crib.errors import NotFound, PermissionDenied, Unauthenticated, Unavailable
from crib.images.auth import Credentials
from crib.images.manifest import MT_OCI_MANIFEST
from crib.images.registries_conf import Endpoint
from crib.images.registry import RegistryClient, RegistryError

BLOB = bytes(range(256)) * 400
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST}).encode()


@dataclass
class FakeRegistry:
    """Serves one repository `a/b` at reg.example; auth and faults are switched on per test."""

    auth: str = ""  # "", "basic", "bearer"
    users: dict[str, str] = field(default_factory=lambda: {"me": "pw"})
    fail_next: list[int] = field(default_factory=list)  # statuses to answer before serving
    cut_at: list[int] = field(default_factory=list)  # per blob GET: serve only this many bytes
    honour_range: bool = True
    seen: list[httpx.Request] = field(default_factory=list)
    tokens_issued: int = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.host == "auth.example":
            return self._token(request)
        if self.fail_next:
            body = {"errors": [{"code": "X", "message": "injected"}]}
            return httpx.Response(self.fail_next.pop(0), json=body)
        if not self._authorized(request):
            challenge = ('Basic realm="fake"' if self.auth == "basic" else
                         'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"')
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        path = request.url.path
        if path == "/v2/a/b/manifests/latest":
            return httpx.Response(200, content=MANIFEST, headers={"Content-Type": MT_OCI_MANIFEST})
        if path == f"/v2/a/b/blobs/{BLOB_DIGEST}":
            start = 0
            rng = request.headers.get("Range", "")
            if rng and self.honour_range:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
            body = BLOB[start:]
            if self.cut_at:
                body = body[:self.cut_at.pop(0) - start]
                # A connection that closes early: the declared length is longer than the body.
                return httpx.Response(206 if start else 200, stream=_Truncated(body, len(BLOB) - start),
                                      headers=self._range_headers(start))
            return httpx.Response(206 if start else 200, content=body, headers=self._range_headers(start))
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]})

    @staticmethod
    def _range_headers(start: int) -> dict[str, str]:
        return {"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"} if start else {}

    def _authorized(self, request: httpx.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.auth == "basic":
            if not header.startswith("Basic "):
                return False
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            return self.users.get(user) == pw
        if self.auth == "bearer":
            return header == "Bearer good-token"
        return True

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.tokens_issued += 1
        scoped = request.url.params.get("scope") == "repository:a/b:pull"
        assert scoped or b"scope=repository" in request.content
        header = request.headers.get("Authorization", "")
        if request.method == "POST":
            form = request.content
            ok = b"refresh_token=refresh-me" in form and b"grant_type=refresh_token" in form
        elif header.startswith("Basic "):
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            ok = self.users.get(user) == pw
        else:
            ok = False
        if not ok:
            return httpx.Response(401)
        return httpx.Response(200, json={"token": "good-token", "expires_in": 300})


class _Truncated(httpx.AsyncByteStream):
    def __init__(self, body: bytes, declared: int) -> None:
        self._body = body
        self._declared = declared

    async def __aiter__(self):  # type: ignore[override]
        yield self._body
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def client_for(fake: FakeRegistry) -> RegistryClient:
    return RegistryClient(transport=httpx.MockTransport(fake.handler), retry_base=0.0, retries=3,
                          certs_dir="")


EP = Endpoint(host="reg.example", repository="a/b", target="latest")


async def fetch_all(client: RegistryClient, creds: Credentials | None = None) -> bytes:
    got = bytearray()

    async def write(chunk: bytes) -> None:
        got.extend(chunk)

    await client.session(EP, creds).fetch_blob(BLOB_DIGEST, len(BLOB), write, "blob")
    return bytes(got)


async def test_anonymous_manifest_over_https() -> None:
    fake = FakeRegistry()
    client = client_for(fake)
    m = await client.session(EP, None).manifest("latest", "image x")
    assert m.data == MANIFEST
    assert fake.seen[0].url.scheme == "https"
    assert "Authorization" not in fake.seen[0].headers
    assert fake.seen[0].headers["Accept"].startswith("application/vnd.oci.image.index.v1+json")
    await client.aclose()


async def test_bearer_token_flow_with_credentials_and_reuse() -> None:
    fake = FakeRegistry(auth="bearer")
    client = client_for(fake)
    session = client.session(EP, Credentials(username="me", password="pw"))
    await session.manifest("latest", "x")
    assert await fetch_all(client, Credentials(username="me", password="pw")) == BLOB
    assert fake.tokens_issued == 1  # cached for the next requests of the same scope
    token_req = next(r for r in fake.seen if r.url.host == "auth.example")
    assert token_req.url.params["service"] == "reg"
    await client.aclose()


async def test_identity_token_is_exchanged_with_a_post() -> None:
    fake = FakeRegistry(auth="bearer")
    client = client_for(fake)
    await client.session(EP, Credentials(identity_token="refresh-me")).manifest("latest", "x")
    assert [r.method for r in fake.seen if r.url.host == "auth.example"] == ["POST"]
    await client.aclose()


async def test_registry_token_is_sent_as_is() -> None:
    fake = FakeRegistry(auth="bearer")
    client = client_for(fake)
    await client.session(EP, Credentials(registry_token="good-token")).manifest("latest", "x")
    assert fake.tokens_issued == 0
    await client.aclose()


@pytest.mark.parametrize(("auth", "creds", "error", "message"), [
    ("bearer", None, Unauthenticated, "requires credentials"),
    ("bearer", Credentials(username="me", password="wrong"), PermissionDenied, "refused the credentials of "
                                                                               "user 'me'"),
    ("basic", None, Unauthenticated, "requires a username and password"),
    ("basic", Credentials(username="me", password="wrong"), PermissionDenied, "refused the credentials of "
                                                                              "user 'me'"),
], ids=["bearer-anonymous", "bearer-wrong", "basic-anonymous", "basic-wrong"])
async def test_auth_failures(auth: str, creds: Credentials | None, error: type[Exception],
                             message: str) -> None:
    client = client_for(FakeRegistry(auth=auth))
    with pytest.raises(error, match=message) as err:
        await client.session(EP, creds).manifest("latest", "image reg.example/a/b:latest")
    assert "wrong" not in str(err.value)  # never the secret
    await client.aclose()


async def test_basic_auth_is_sent_once_known() -> None:
    fake = FakeRegistry(auth="basic")
    client = client_for(fake)
    creds = Credentials(username="me", password="pw")
    await client.session(EP, creds).manifest("latest", "x")
    await client.session(EP, creds).manifest("latest", "x")
    assert [r.headers.get("Authorization", "")[:5] for r in fake.seen] == ["", "Basic", "Basic"]
    await client.aclose()


async def test_5xx_is_retried_then_succeeds() -> None:
    fake = FakeRegistry(fail_next=[503, 500, 429])
    client = client_for(fake)
    assert (await client.session(EP, None).manifest("latest", "x")).data == MANIFEST
    assert len(fake.seen) == 4
    await client.aclose()


async def test_persistent_5xx_is_unavailable_with_the_count() -> None:
    client = client_for(FakeRegistry(fail_next=[503] * 10))
    with pytest.raises(Unavailable, match=r"failed 4 times, last: .*HTTP 503"):
        await client.session(EP, None).manifest("latest", "x")
    await client.aclose()


async def test_404_and_403() -> None:
    client = client_for(FakeRegistry())
    with pytest.raises(NotFound, match=r"not found at reg\.example/a/b"):
        await client.session(EP, None).manifest("nope", "image x")
    client2 = client_for(FakeRegistry(fail_next=[403]))
    with pytest.raises(PermissionDenied, match="HTTP 403"):
        await client2.session(EP, None).manifest("latest", "x")
    await client.aclose()
    await client2.aclose()


async def test_broken_download_resumes_with_range() -> None:
    fake = FakeRegistry(cut_at=[10_000, 50_000])
    client = client_for(fake)
    assert await fetch_all(client) == BLOB
    ranges = [r.headers.get("Range") for r in fake.seen]
    assert ranges == [None, "bytes=10000-", "bytes=50000-"]
    await client.aclose()


async def test_registry_without_range_support_skips_what_it_has() -> None:
    fake = FakeRegistry(cut_at=[10_000], honour_range=False)
    client = client_for(fake)
    assert await fetch_all(client) == BLOB
    await client.aclose()


async def test_download_failing_at_the_same_place_gives_up() -> None:
    fake = FakeRegistry(cut_at=[10_000] * 20)
    client = client_for(fake)
    with pytest.raises(Unavailable, match=r"keeps failing at 10000 of 102400 bytes"):
        await fetch_all(client)
    assert len(fake.seen) == 5  # the first try, then retries without progress
    await client.aclose()


async def test_too_many_bytes_are_refused() -> None:
    fake = FakeRegistry()
    client = client_for(fake)

    async def write(chunk: bytes) -> None:
        pass

    with pytest.raises(RegistryError, match="more than the 1000 bytes"):
        await client.session(EP, None).fetch_blob(BLOB_DIGEST, 1000, write, "blob")
    await client.aclose()


async def test_redirect_to_storage_drops_the_credentials() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "reg.example":
            if "Authorization" not in request.headers:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'})
            return httpx.Response(307, headers={"Location": "https://storage.example/blob?sig=1"})
        return httpx.Response(200, content=BLOB)

    client = RegistryClient(transport=httpx.MockTransport(handler), retry_base=0.0, certs_dir="")
    got = bytearray()

    async def write(chunk: bytes) -> None:
        got.extend(chunk)

    await client.session(EP, Credentials(username="u", password="p")).fetch_blob(
        BLOB_DIGEST, len(BLOB), write, "blob")
    assert bytes(got) == BLOB
    assert seen[-1].url.host == "storage.example"
    assert "Authorization" not in seen[-1].headers
    await client.aclose()


def test_loopback_endpoints_use_plain_http() -> None:
    fake = FakeRegistry()
    seen: Callable[[], list[httpx.Request]] = lambda: fake.seen  # noqa: E731
    client = client_for(fake)
    session = client.session(Endpoint(host="127.0.0.1:5000", repository="a/b", target="latest"), None)
    assert session._schemes() == ["http"]
    insecure = client.session(Endpoint(host="reg.example", repository="a/b", target="t", insecure=True), None)
    assert insecure._schemes() == ["https", "http"]
    assert seen() == []
