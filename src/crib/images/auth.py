"""Registry credentials and the parts of the auth protocol that are pure parsing.

Where credentials come from, first match wins: the CRI AuthConfig of the request (kubelet's pull secret for
this image), then the node-wide docker config.json (`image.auth_file`). A registry answers 401 with a
`WWW-Authenticate` challenge: `Basic realm=...` (send the credentials on every request) or `Bearer
realm=...,service=...,scope=...` (fetch a token from the realm, anonymously or with the credentials, and
send that). An identity token is an OAuth2 refresh token, exchanged at the realm with a POST; a registry
token is a ready bearer token.

Secrets never reach a log line or an error message: `Credentials.__repr__` hides them, and errors name the
user, not the password.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crib.errors import ConfigError, InvalidArgument

_TOKEN = re.compile(r"[\x21-\x7e]+")
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """What a client proves its identity with; any subset may be set."""

    username: str = field(default="")
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"

    def describe(self) -> str:
        """Who these credentials are, for an error message (never the secret)."""
        if self.username:
            return f"user {self.username!r}"
        if self.identity_token:
            return "an identity token"
        if self.registry_token:
            return "a registry token"
        return "no credentials"


def decode_auth(auth: str, *, source: str) -> tuple[str, str]:
    """Split a base64 `user:password` (the `auth` field of AuthConfig and config.json).

    Raises:
        InvalidArgument: not base64, or no ':' inside.
    """
    try:
        text = base64.b64decode(auth.strip(), validate=True).decode()
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError, and a str with non-ASCII characters
        raise InvalidArgument(f"{source}: the auth field is not base64 of \"user:password\"") from exc
    user, sep, password = text.partition(":")
    if not sep:
        raise InvalidArgument(f"{source}: the auth field decodes to no \"user:password\" pair")
    return user, password


def from_fields(*, username: str = "", password: str = "", auth: str = "", identity_token: str = "",
                registry_token: str = "", source: str = "auth config") -> Credentials | None:
    """Credentials from the fields of a CRI AuthConfig (or a config.json entry); None when all are empty."""
    if auth and not username:
        username, password = decode_auth(auth, source=source)
    if registry_token and not _TOKEN.fullmatch(registry_token):
        # Sent as is in an Authorization header: once, a non-ASCII byte made the pull fail INTERNAL
        # (UnicodeEncodeError) and a control character made the registry answer 400.
        raise InvalidArgument(f"{source}: the registry token must be printable ASCII with no spaces (it is "
                              "sent as a bearer token in an HTTP header)")
    creds = Credentials(username=username, password=password, identity_token=identity_token,
                        registry_token=registry_token)
    return None if creds.empty else creds


def normalize_host(server: str) -> str:
    """`https://index.docker.io/v1/` -> `docker.io`, `http://reg:5000/x` -> `reg:5000`."""
    host = re.sub(r"^[a-z]+://", "", server.strip()).split("/", 1)[0]
    return "docker.io" if host in _DOCKER_HUB_ALIASES else host


class DockerConfig:
    """The `auths` of a docker config.json, keyed by registry host."""

    def __init__(self, entries: dict[str, Credentials], source: str = "") -> None:
        self._entries = entries
        self.source = source

    @classmethod
    def load(cls, path: str) -> DockerConfig:
        """Read path; an empty path means no file. A missing file is an empty config (it may appear later).

        Raises:
            ConfigError: the file exists and is not a docker config.json.
        """
        if not path:
            return cls({})
        try:
            data: Any = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return cls({}, path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"image.auth_file {path}: not a readable docker config.json: {exc}") from exc
        auths = data.get("auths", {}) if isinstance(data, dict) else None
        if not isinstance(auths, dict):
            raise ConfigError(f"image.auth_file {path}: \"auths\" must be an object of registry -> "
                              "credentials")
        entries: dict[str, Credentials] = {}
        for server, entry in auths.items():
            if not isinstance(entry, dict):
                continue
            try:
                creds = from_fields(
                    username=str(entry.get("username", "")), password=str(entry.get("password", "")),
                    auth=str(entry.get("auth", "")), identity_token=str(entry.get("identitytoken", "")),
                    registry_token=str(entry.get("registrytoken", "")), source=f"{path} entry {server!r}")
            except InvalidArgument as exc:
                raise ConfigError(str(exc)) from exc
            if creds is not None:
                entries[normalize_host(server)] = creds
        return cls(entries, path)

    def lookup(self, host: str) -> Credentials | None:
        return self._entries.get(normalize_host(host))


# ------------------------------------------------------------------------------------------ challenges

_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """One `WWW-Authenticate` challenge: its scheme (lower-case) and parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value into challenges (`Bearer realm="x",service="y"`)."""
    out: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        match = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*)").match(text, pos)
        if not match:
            break
        scheme = match.group(1).lower()
        pos = match.end()
        params: dict[str, str] = {}
        while pos < len(text):
            pm = _PARAM_RE.match(text, pos)
            if not pm:
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3) or ""
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = pm.end()
        out.append(Challenge(scheme=scheme, params=params))
        while pos < len(text) and text[pos] in ", ":
            pos += 1
    return out


def token_from_response(data: Any) -> tuple[str, float]:
    """(token, lifetime seconds) from a token endpoint's JSON; lifetime defaults to 60 s as Docker's does.

    Raises:
        ValueError: no token in the answer.
    """
    if not isinstance(data, dict):
        raise ValueError("the token endpoint answered with something that is not a JSON object")
    token = data.get("token") or data.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("the token endpoint's answer has neither \"token\" nor \"access_token\"")
    expires = data.get("expires_in")
    lifetime = float(expires) if isinstance(expires, int | float) and expires > 0 else 60.0
    return token, lifetime


__all__ = [
    "Challenge",
    "Credentials",
    "DockerConfig",
    "decode_auth",
    "from_fields",
    "normalize_host",
    "parse_challenges",
    "token_from_response",
]
