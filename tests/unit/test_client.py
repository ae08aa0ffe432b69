"""Endpoint resolution follows crictl's order."""

from __future__ import annotations

from pathlib import Path

import pytest

from crib.cli.client import DEFAULT_ENDPOINT, ClientError, normalize, resolve


@pytest.fixture
def crictl_yaml(tmp_path: Path) -> str:
    path = tmp_path / "crictl.yaml"
    path.write_text("runtime-endpoint: unix:///from/yaml.sock\nimage-endpoint: /from/yaml-img.sock\n")
    return str(path)


def test_flag_wins(monkeypatch: pytest.MonkeyPatch, crictl_yaml: str) -> None:
    monkeypatch.setenv("CONTAINER_RUNTIME_ENDPOINT", "unix:///from/env.sock")
    ep = resolve("/from/flag.sock", None, crictl_yaml)
    assert ep.runtime == "unix:///from/flag.sock"
    assert ep.source == "--runtime-endpoint"


def test_env_before_yaml(monkeypatch: pytest.MonkeyPatch, crictl_yaml: str) -> None:
    monkeypatch.setenv("CONTAINER_RUNTIME_ENDPOINT", "unix:///from/env.sock")
    assert resolve(None, None, crictl_yaml).runtime == "unix:///from/env.sock"


def test_yaml_before_default(monkeypatch: pytest.MonkeyPatch, crictl_yaml: str) -> None:
    monkeypatch.delenv("CONTAINER_RUNTIME_ENDPOINT", raising=False)
    monkeypatch.delenv("IMAGE_SERVICE_ENDPOINT", raising=False)
    ep = resolve(None, None, crictl_yaml)
    assert ep.runtime == "unix:///from/yaml.sock"
    assert ep.image == "unix:///from/yaml-img.sock"


def test_default_when_nothing_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CONTAINER_RUNTIME_ENDPOINT", raising=False)
    monkeypatch.delenv("IMAGE_SERVICE_ENDPOINT", raising=False)
    ep = resolve(None, None, str(tmp_path / "missing.yaml"))
    assert ep.runtime == DEFAULT_ENDPOINT
    assert ep.image == DEFAULT_ENDPOINT


def test_non_unix_endpoint_is_refused() -> None:
    with pytest.raises(ClientError, match="only unix://"):
        normalize("tcp://127.0.0.1:1234")


def test_broken_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "crictl.yaml"
    path.write_text("runtime-endpoint: [unclosed\n")
    with pytest.raises(ClientError, match="cannot read"):
        resolve(None, None, str(path))
