"""The distribution (registry v2) HTTP client: manifests, blobs, auth, retries, resumable downloads.

One httpx.AsyncClient per kind of connection (plain/insecure, verified TLS, a host's own CA from
certs.d), each a keep-alive pool shared by every pull. httpx's transport is the seam tests replace.

* Auth: a 401's challenge decides. Bearer: a token is fetched from the realm (anonymously, with
  username/password as basic auth, or by exchanging an identity token) for `repository:<name>:pull`, and
  cached until it expires. Basic: the credentials go on every request to that host. Without credentials a
  401 is UNAUTHENTICATED; with credentials that the registry refuses it is PERMISSION_DENIED; the message
  names the user, never the secret.
* Retries: connection errors, 429 and 5xx are retried with exponential backoff. A blob download that
  breaks resumes with `Range: bytes=<received>-`; a registry that ignores Range answers 200 and the bytes
  already received are skipped. A blob that keeps breaking at the same place fails after the retries.
* Redirects to blob storage are followed (httpx drops the Authorization header when the host changes).
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from crib import lazy, log
from crib.errors import CribError, NotFound, PermissionDenied, Unauthenticated, Unavailable
from crib.images.auth import Credentials, DockerConfig, parse_challenges, token_from_response
from crib.images.manifest import ACCEPT
from crib.images.registries_conf import Endpoint, is_loopback
from crib.metrics import ops


def _httpx_without_its_command_line() -> None:
    """Keep httpx from importing its own command-line tool (rich and pygments, ~4.5 MiB of RSS).

    httpx's __init__ imports httpx._main, the `httpx` console script, whenever rich and pygments are
    installed, and they are (crib's CLI draws with rich). A daemon never runs that tool, and a module
    stays for the life of the process: it was a third of what the first pull added to the daemon's idle
    memory (bench/README.md, issue 13). A stand-in registered before httpx loads satisfies the import.
    """
    if "httpx._main" in sys.modules:
        return
    stand_in = ModuleType("httpx._main", "httpx's command line, not loaded in crib")

    def main() -> None:
        raise SystemExit("httpx's command line is not available inside crib")

    stand_in.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stand_in


if TYPE_CHECKING:
    import httpx
else:
    _httpx_without_its_command_line()
    httpx = lazy.module("httpx")  # loaded by the first pull: a daemon that never pulls never pays for it

_log = log.get(__name__)

DOCKER_HUB_API = "registry-1.docker.io"
MAX_MANIFEST_BYTES = 4 << 20
USER_AGENT = "crib/0.1 (+cri)"


@functools.cache
def _system_tls() -> ssl.SSLContext:
    """The system's CA store (loading it costs ~0.1 s, so once per process)."""
    return ssl.create_default_context()


class RegistryError(CribError):
    """The registry answered with an error that is neither auth nor absence (the message quotes it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedManifest:
    data: bytes
    content_type: str
    digest_header: str


def _registry_message(resp: httpx.Response) -> str:
    """The `errors[].message` of a registry error body, or its first bytes."""
    try:
        doc = json.loads(resp.content)
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errs, list) and errs:
            return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs
                             if isinstance(e, dict))
    except (ValueError, httpx.ResponseNotRead):
        pass
    try:
        return resp.text[:200].strip()
    except httpx.ResponseNotRead:
        return ""


class _Retry(Exception):
    """A response worth retrying (429 / 5xx)."""

    def __init__(self, resp: httpx.Response) -> None:
        super().__init__(f"HTTP {resp.status_code}")
        self.status = resp.status_code


class RegistryClient:
    """Connection pools, TLS settings, auth state; `session()` gives a view on one repository."""

    def __init__(self, *, docker_config: DockerConfig | None = None,
                 certs_dir: str = "/etc/containers/certs.d", read_timeout: float = 60.0, retries: int = 4,
                 retry_base: float = 0.25, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.docker_config = docker_config or DockerConfig({})
        self.certs_dir = Path(certs_dir) if certs_dir else None
        self.retries = retries
        self.retry_base = retry_base
        self._read_timeout = read_timeout
        self._transport = transport
        self._clients: dict[tuple[str, bool], httpx.AsyncClient] = {}
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._bearer: dict[str, tuple[str, str]] = {}  # host -> (realm, service) seen in a challenge
        self._basic: set[tuple[str, str]] = set()  # (host, creds key) known to want basic auth
        self._http_hosts: set[str] = set()  # insecure hosts that turned out to speak plain HTTP

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def session(self, endpoint: Endpoint, credentials: Credentials | None) -> RegistrySession:
        return RegistrySession(self, endpoint, credentials)

    # ------------------------------------------------------------------------------------------ clients

    def _tls(self, host: str) -> tuple[str, ssl.SSLContext | bool]:
        d = self.certs_dir / host if self.certs_dir else None
        if d is None or not d.is_dir():
            return "default", True
        ctx = ssl.create_default_context()
        for ca in sorted(d.glob("*.crt")):
            ctx.load_verify_locations(cafile=str(ca))
        for cert in sorted(d.glob("*.cert")):
            key = cert.with_suffix(".key")
            if key.is_file():
                ctx.load_cert_chain(str(cert), str(key))
        return f"host:{host}", ctx

    def client(self, host: str, *, insecure: bool) -> httpx.AsyncClient:
        loopback = is_loopback(host)
        key_name, verify = ("insecure", False) if insecure or loopback else self._tls(host)
        if verify is True:
            verify = _system_tls()
        key = (key_name, loopback)
        client = self._clients.get(key)
        if client is None:
            timeout = httpx.Timeout(connect=30.0, read=self._read_timeout or None, write=60.0, pool=None)
            client = httpx.AsyncClient(
                verify=verify, timeout=timeout, follow_redirects=True, max_redirects=5,
                # A proxy from the environment is for reaching the internet, never for this machine.
                trust_env=not loopback, transport=self._transport,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
            self._clients[key] = client
        return client

    async def backoff(self, attempt: int) -> None:
        await asyncio.sleep(min(self.retry_base * (2 ** attempt), 8.0))

    # --------------------------------------------------------------------------------------------- auth

    @staticmethod
    def creds_key(creds: Credentials | None) -> str:
        if creds is None:
            return "anonymous"
        return f"{creds.username}\0{hash((creds.password, creds.identity_token, creds.registry_token))}"

    def auth_header(self, host: str, scope: str, creds: Credentials | None) -> str | None:
        if creds is not None and creds.registry_token:
            return f"Bearer {creds.registry_token}"
        ck = self.creds_key(creds)
        if creds is not None and creds.username and (host, ck) in self._basic:
            return creds.basic_header()
        token = self._tokens.get((host, scope, ck))
        if token is not None and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        return None

    async def authenticate(self, host: str, scope: str, creds: Credentials | None, header: str,
                           what: str) -> None:
        """Act on a 401 challenge so that the next request carries what the registry asked for.

        Raises:
            Unauthenticated: the registry wants credentials and none were given.
            PermissionDenied: the token endpoint refused the credentials.
        """
        challenges = parse_challenges(header)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and bearer.params.get("realm"):
            realm, service = bearer.params["realm"], bearer.params.get("service", "")
            self._bearer[host] = (realm, service)
            await self._fetch_token(host, realm, service, scope, creds, what)
            return
        if any(c.scheme == "basic" for c in challenges):
            if creds is None or not creds.username:
                raise Unauthenticated(
                    f"{what}: the registry {host} requires a username and password; pass them in the pull "
                    "request's auth (kubelet: an imagePullSecret) or in image.auth_file")
            self._basic.add((host, self.creds_key(creds)))
            return
        raise Unauthenticated(f"{what}: the registry {host} asks for authentication crib cannot do "
                              f"({header[:100]!r})")

    async def prefetch_token(self, host: str, scope: str, creds: Credentials | None, what: str) -> None:
        """Fetch a token before the first request when this host's realm is already known (saves a 401)."""
        known = self._bearer.get(host)
        if known is not None and self.auth_header(host, scope, creds) is None:
            await self._fetch_token(host, known[0], known[1], scope, creds, what)

    async def _fetch_token(self, host: str, realm: str, service: str, scope: str, creds: Credentials | None,
                           what: str) -> None:
        params: dict[str, str] = {"scope": scope}
        if service:
            params["service"] = service
        realm_host = httpx.URL(realm).netloc.decode()
        client = self.client(realm_host, insecure=False)
        who = creds.describe() if creds is not None else "no credentials"
        try:
            if creds is not None and creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "client_id": "crib", **params}
                resp = await client.post(realm, data=form)
            elif creds is not None and creds.username:
                resp = await client.get(realm, params=params, auth=(creds.username, creds.password))
            else:
                resp = await client.get(realm, params=params)
        except httpx.TransportError as exc:
            raise Unavailable(f"{what}: cannot reach the token service {realm} of {host}: {exc}") from exc
        if resp.status_code in (401, 403):
            if creds is None or creds.empty:
                raise Unauthenticated(
                    f"{what}: the registry {host} requires credentials (its token service {realm} refused an "
                    "anonymous request); pass them in the pull request's auth or in image.auth_file")
            raise PermissionDenied(f"{what}: the token service {realm} of {host} refused the credentials of "
                                   f"{who}")
        if resp.is_error:
            raise Unavailable(f"{what}: the token service {realm} of {host} answered HTTP "
                              f"{resp.status_code}: "
                              f"{_registry_message(resp)}")
        try:
            token, lifetime = token_from_response(resp.json())
        except ValueError as exc:
            raise RegistryError(f"{what}: the token service {realm} of {host}: {exc}") from exc
        # Renew a little early so that a token never expires between check and use.
        self._tokens[(host, scope, self.creds_key(creds))] = (token, time.monotonic() + max(lifetime - 10, 1))


class RegistrySession:
    """Requests to one repository on one endpoint, with one set of credentials."""

    def __init__(self, client: RegistryClient, endpoint: Endpoint, creds: Credentials | None) -> None:
        self._c = client
        self.endpoint = endpoint
        self.host = DOCKER_HUB_API if endpoint.host == "docker.io" else endpoint.host
        self.creds = creds
        self.scope = f"repository:{endpoint.repository}:pull"

    def __str__(self) -> str:
        return str(self.endpoint)

    def _schemes(self) -> list[str]:
        if self.endpoint.plain_http or self.host in self._c._http_hosts:
            return ["http"]
        if self.endpoint.insecure:
            return ["https", "http"]
        return ["https"]

    async def _send_once(self, method: str, path: str, headers: dict[str, str], what: str) -> httpx.Response:
        """One request with auth (answering at most one challenge); the response is streamed, unread."""
        for attempt in range(2):
            await self._c.prefetch_token(self.host, self.scope, self.creds, what)
            hdrs = dict(headers)
            authz = self._c.auth_header(self.host, self.scope, self.creds)
            if authz:
                hdrs["Authorization"] = authz
            resp = await self._request(method, path, hdrs)
            if resp.status_code != 401:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            await resp.aclose()
            if attempt == 1 or not challenge:
                break
            await self._c.authenticate(self.host, self.scope, self.creds, challenge, what)
        if self.creds is None or self.creds.empty:
            raise Unauthenticated(f"{what}: the registry {self.host} requires authentication; pass "
                                  "credentials "
                                  "in the pull request's auth (kubelet: an imagePullSecret) or in "
                                  "image.auth_file")
        raise PermissionDenied(f"{what}: the registry {self.host} refused the credentials of "
                               f"{self.creds.describe()}")

    async def _request(self, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
        schemes = self._schemes()
        last: Exception | None = None
        for i, scheme in enumerate(schemes):
            client = self._c.client(self.host, insecure=self.endpoint.insecure)
            url = f"{scheme}://{self.host}{path}"
            try:
                req = client.build_request(method, url, headers=headers)
                resp = await client.send(req, stream=True)
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                last = exc
                if i + 1 < len(schemes):
                    continue  # an insecure registry that speaks plain HTTP
                raise
            if scheme == "http" and len(schemes) > 1:
                self._c._http_hosts.add(self.host)
            return resp
        assert last is not None
        raise last

    async def request(self, method: str, path: str, headers: dict[str, str], what: str) -> httpx.Response:
        """A request with auth and retries on connection errors, 429 and 5xx; returns an unread response.

        Raises:
            Unavailable: still failing after the retries.
        """
        attempt = 0
        while True:
            try:
                resp = await self._send_once(method, path, headers, what)
                if resp.status_code == 429 or resp.status_code >= 500:
                    await resp.aread()
                    raise _Retry(resp)
                return resp
            except (httpx.TransportError, _Retry) as exc:
                if attempt >= self._c.retries:
                    raise Unavailable(f"{what}: the registry {self.host} failed {attempt + 1} times, last: "
                                      f"{_describe(exc)}") from exc
                _log.debug("%s: %s, retrying", what, _describe(exc))
                await self._c.backoff(attempt)
                attempt += 1

    # -------------------------------------------------------------------------------------- operations

    async def manifest(self, target: str, what: str) -> FetchedManifest:
        """GET /v2/<repo>/manifests/<tag|digest> with every accepted media type.

        Raises:
            NotFound: the registry has no such manifest.
        """
        path = f"/v2/{self.endpoint.repository}/manifests/{target}"
        resp = await self.request("GET", path, {"Accept": ACCEPT}, what)
        try:
            if resp.status_code == 404:
                await resp.aread()
                raise NotFound(f"{what}: not found at {self.host}/{self.endpoint.repository} "
                               f"({_registry_message(resp) or 'manifest unknown'})")
            if resp.is_error:
                await resp.aread()
                raise _error_for(resp, what, self.host)
            data = await _read_bounded(resp, MAX_MANIFEST_BYTES, what)
            return FetchedManifest(data=data, content_type=resp.headers.get("Content-Type", ""),
                                   digest_header=resp.headers.get("Docker-Content-Digest", ""))
        finally:
            await resp.aclose()

    async def blob(self, digest: str, max_size: int, what: str) -> bytes:
        """A small blob (an image config) in memory; the caller verifies it."""
        resp = await self.request("GET", f"/v2/{self.endpoint.repository}/blobs/{digest}", {}, what)
        try:
            if resp.status_code == 404:
                await resp.aread()
                raise NotFound(f"{what}: blob {digest} not found at {self.host}/{self.endpoint.repository}")
            if resp.is_error:
                await resp.aread()
                raise _error_for(resp, what, self.host)
            return await _read_bounded(resp, max_size, what)
        finally:
            await resp.aclose()

    async def fetch_blob(self, digest: str, size: int, write: Callable[[bytes], Awaitable[None]], what: str,
                         on_bytes: Callable[[int], None] | None = None) -> None:
        """Stream a blob into write(), resuming after broken connections (see the module note).

        The caller verifies the digest; this checks that exactly `size` bytes arrive.

        Raises:
            Unavailable: the download keeps breaking.
            NotFound: the registry does not have the blob.
        """
        path = f"/v2/{self.endpoint.repository}/blobs/{digest}"
        received = 0
        failures = 0
        while True:
            headers = {"Range": f"bytes={received}-"} if received else {}
            progressed = False
            try:
                resp = await self.request("GET", path, headers, what)
                try:
                    if resp.status_code == 404:
                        await resp.aread()
                        raise NotFound(f"{what}: blob {digest} not found at {self.host}/"
                                       f"{self.endpoint.repository}")
                    if resp.status_code == 416 and received >= size:
                        return
                    if resp.is_error:
                        await resp.aread()
                        raise _error_for(resp, what, self.host)
                    skip = received if (received and resp.status_code != 206) else 0
                    if resp.status_code == 206:
                        start = _range_start(resp.headers.get("Content-Range", ""))
                        if start != received:
                            raise RegistryError(f"{what}: asked for bytes from {received}, the registry sent "
                                                f"from {start}")
                    async for chunk in resp.aiter_bytes():
                        if skip:
                            if len(chunk) <= skip:
                                skip -= len(chunk)
                                continue
                            chunk, skip = chunk[skip:], 0
                        if received + len(chunk) > size:
                            raise RegistryError(f"{what}: the registry sent more than the {size} bytes the "
                                                "manifest declares")
                        received += len(chunk)
                        progressed = True
                        ops.COUNTERS.pulled_bytes(len(chunk))
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                        await write(chunk)
                finally:
                    await resp.aclose()
                if received == size:
                    return
                raise httpx.RemoteProtocolError(f"the connection ended after {received} of {size} bytes")
            except httpx.TransportError as exc:
                failures = 0 if progressed else failures + 1
                if failures > self._c.retries:
                    raise Unavailable(f"{what}: the download of {digest} from {self.host} keeps failing at "
                                      f"{received} of {size} bytes: {_describe(exc)}") from exc
                _log.info("%s: download interrupted at %d of %d bytes (%s), resuming", what, received, size,
                          _describe(exc))
                await self._c.backoff(failures)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text


def _range_start(content_range: str) -> int:
    # "bytes 100-199/200"
    try:
        return int(content_range.split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return -1


async def _read_bounded(resp: httpx.Response, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.aiter_bytes():
        total += len(chunk)
        ops.COUNTERS.pulled_bytes(len(chunk))
        if total > limit:
            raise RegistryError(f"{what}: the registry's answer is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _error_for(resp: httpx.Response, what: str, host: str) -> CribError:
    message = _registry_message(resp)
    if resp.status_code == 403:
        return PermissionDenied(f"{what}: the registry {host} denied access (HTTP 403): {message}")
    if resp.status_code == 404:
        return NotFound(f"{what}: not found at {host}: {message}")
    return RegistryError(f"{what}: the registry {host} answered HTTP {resp.status_code}: {message}")


__all__ = ["FetchedManifest", "RegistryClient", "RegistryError", "RegistrySession"]
