"""Credentials, docker config.json and WWW-Authenticate parsing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from crib.errors import ConfigError, InvalidArgument
from crib.images import auth
from crib.images.auth import Challenge, Credentials


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("header", "expected"), [
    ('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"',
     [Challenge(scheme="bearer", params={"realm": "https://auth.example/token", "service": "registry.example",
                                         "scope": "repository:a/b:pull"})]),
    ('Basic realm="crib-test-registry"', [Challenge(scheme="basic", params={"realm": "crib-test-registry"})]),
    ('Basic realm="a", Bearer realm="b",service=s',
     [Challenge(scheme="basic", params={"realm": "a"}),
      Challenge(scheme="bearer", params={"realm": "b", "service": "s"})]),
    ('Bearer realm="with \\"quote\\""', [Challenge(scheme="bearer", params={"realm": 'with "quote"'})]),
    ("Negotiate", [Challenge(scheme="negotiate", params={})]),
], ids=["bearer", "basic", "two", "escaped", "bare"])
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert auth.parse_challenges(header) == expected


def test_from_fields_decodes_auth_and_hides_secrets() -> None:
    creds = auth.from_fields(auth=b64("me:s3cret"))
    assert creds == Credentials(username="me", password="s3cret")
    assert "s3cret" not in repr(creds)
    assert creds.describe() == "user 'me'"
    assert creds.basic_header() == "Basic " + b64("me:s3cret")
    assert auth.from_fields() is None
    assert auth.from_fields(identity_token="tok") == Credentials(identity_token="tok")
    with pytest.raises(InvalidArgument, match="not base64"):
        auth.from_fields(auth="%%%")
    with pytest.raises(InvalidArgument, match="no \"user:password\""):
        auth.from_fields(auth=b64("nocolon"))


@pytest.mark.parametrize(("server", "host"), [
    ("https://index.docker.io/v1/", "docker.io"), ("registry-1.docker.io", "docker.io"),
    ("http://reg.example:5000/v2/", "reg.example:5000"), ("127.0.0.1:5001", "127.0.0.1:5001"),
], ids=["hub-v1", "hub-api", "scheme-path", "bare"])
def test_normalize_host(server: str, host: str) -> None:
    assert auth.normalize_host(server) == host


def test_docker_config_lookup(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
        "127.0.0.1:5001": {"username": "u", "password": "p"},
        "tok.example": {"identitytoken": "refresh"},
        "empty.example": {},
    }}))
    cfg = auth.DockerConfig.load(str(path))
    assert cfg.lookup("docker.io") == Credentials(username="hub", password="pw")
    assert cfg.lookup("127.0.0.1:5001") == Credentials(username="u", password="p")
    assert cfg.lookup("tok.example") == Credentials(identity_token="refresh")
    assert cfg.lookup("empty.example") is None
    assert cfg.lookup("other.example") is None
    assert auth.DockerConfig.load("").lookup("docker.io") is None
    assert auth.DockerConfig.load(str(tmp_path / "absent.json")).lookup("docker.io") is None


@pytest.mark.parametrize("content", ["not json", '{"auths": []}', '{"auths": {"x": {"auth": "%%"}}}'],
                         ids=["json", "shape", "auth"])
def test_docker_config_errors_name_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=str(path)):
        auth.DockerConfig.load(str(path))


def test_token_from_response() -> None:
    assert auth.token_from_response({"token": "t", "expires_in": 120}) == ("t", 120.0)
    assert auth.token_from_response({"access_token": "a"}) == ("a", 60.0)
    with pytest.raises(ValueError, match="neither"):
        auth.token_from_response({"nothing": 1})
    with pytest.raises(ValueError, match="not a JSON object"):
        auth.token_from_response([1])


@pytest.mark.parametrize("token", ["tok\x80en", "tok en", "tok\nen", "t\x00", "caf\u00e9"])
def test_a_registry_token_that_cannot_be_a_header_is_refused(token: str) -> None:
    """Once INTERNAL (UnicodeEncodeError in the HTTP client), found by the RPC fuzzer."""
    with pytest.raises(InvalidArgument, match="registry token must be printable ASCII"):
        auth.from_fields(registry_token=token, source="the pull request's auth")
    good = "eyJ.a-b_c~d+e/f="
    assert auth.from_fields(registry_token=good) == Credentials(registry_token=good)


@pytest.mark.parametrize("value", ["\x81bWU6cw==", "bWU6cw==\u00e9", "%%%", b64("no-colon")])
def test_an_auth_field_that_is_not_base64_of_a_pair_is_refused(value: str) -> None:
    """A non-ASCII character was once a ValueError out of base64 (INTERNAL), found by the RPC fuzzer."""
    with pytest.raises(InvalidArgument, match="the auth field"):
        auth.from_fields(auth=value)
