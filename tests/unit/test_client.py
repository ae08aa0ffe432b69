"""Client settings follow crictl's order: flag, environment, the client config file, crib's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from crib.cli.client import DEFAULT_ENDPOINT, ClientError, normalize, read_client_config, resolve
from crib.cli.commands import clientconfig


@pytest.fixture
def crictl_yaml(tmp_path: Path) -> str:
    path = tmp_path / "crictl.yaml"
    path.write_text("runtime-endpoint: unix:///from/yaml.sock\nimage-endpoint: /from/yaml-img.sock\n"
                    "timeout: 7\ndebug: true\npull-image-on-create: true\n")
    return str(path)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAINER_RUNTIME_ENDPOINT", raising=False)
    monkeypatch.delenv("IMAGE_SERVICE_ENDPOINT", raising=False)


def test_flag_wins(monkeypatch: pytest.MonkeyPatch, crictl_yaml: str) -> None:
    monkeypatch.setenv("CONTAINER_RUNTIME_ENDPOINT", "unix:///from/env.sock")
    s = resolve("/from/flag.sock", None, crictl_yaml, timeout_flag="1m30s")
    assert s.endpoints.runtime == "unix:///from/flag.sock"
    assert s.endpoints.source == "--runtime-endpoint"
    assert s.timeout == 90.0


def test_env_before_yaml(monkeypatch: pytest.MonkeyPatch, crictl_yaml: str) -> None:
    monkeypatch.setenv("CONTAINER_RUNTIME_ENDPOINT", "unix:///from/env.sock")
    monkeypatch.setenv("IMAGE_SERVICE_ENDPOINT", "/from/env-img.sock")
    s = resolve(None, None, crictl_yaml)
    assert s.endpoints.runtime == "unix:///from/env.sock"
    assert s.endpoints.image == "unix:///from/env-img.sock"


def test_yaml_before_default(crictl_yaml: str) -> None:
    s = resolve(None, None, crictl_yaml)
    assert s.endpoints.runtime == "unix:///from/yaml.sock"
    assert s.endpoints.image == "unix:///from/yaml-img.sock"
    assert (s.timeout, s.debug, s.pull_image_on_create, s.disable_pull_on_run) == (7.0, True, True, False)


def test_default_when_nothing_set(tmp_path: Path) -> None:
    s = resolve(None, None, str(tmp_path / "missing.yaml"))
    assert s.endpoints.runtime == s.endpoints.image == DEFAULT_ENDPOINT
    assert s.timeout == 10.0


@pytest.mark.parametrize(("flag", "seconds"), [("2s", 2.0), ("1m30s", 90.0), ("10", 10.0), ("0", 10.0),
                                               ("500ms", 0.5)], ids=["2s", "1m30s", "plain", "zero", "ms"])
def test_timeout_forms(tmp_path: Path, flag: str, seconds: float) -> None:
    assert resolve(None, None, str(tmp_path / "none"), timeout_flag=flag).timeout == seconds


def test_bad_timeout_says_which_forms(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match=r"--timeout.*1m30s"):
        resolve(None, None, str(tmp_path / "none"), timeout_flag="soon")


def test_non_unix_endpoint_is_refused() -> None:
    with pytest.raises(ClientError, match="only unix://"):
        normalize("tcp://127.0.0.1:1234")


def test_broken_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "crictl.yaml"
    path.write_text("runtime-endpoint: [unclosed\n")
    with pytest.raises(ClientError, match="cannot read"):
        resolve(None, None, str(path))


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crictl.yaml"
    path.write_text("runtime-endpoint: /x.sock\nruntime-endpiont: /y.sock\n")
    with pytest.raises(ClientError, match="'runtime-endpiont' is not valid"):
        read_client_config(str(path))


def test_quoted_and_commented_values(tmp_path: Path) -> None:
    path = tmp_path / "crictl.yaml"
    path.write_text('# node settings\nruntime-endpoint: "unix:///a b.sock"  # quoted\ndebug: false\n')
    assert read_client_config(str(path)) == {"runtime-endpoint": "unix:///a b.sock", "debug": False}


def test_set_keeps_comments_and_writes_every_key(tmp_path: Path) -> None:
    path = tmp_path / "crictl.yaml"
    path.write_text("# mine\nruntime-endpoint: unix:///old.sock\n")
    clientconfig.run(str(path), None, ("timeout=5,debug=true",), False, ())
    text = path.read_text()
    assert text.startswith("# mine\nruntime-endpoint: unix:///old.sock\n")
    conf = read_client_config(str(path))
    assert conf["timeout"] == 5
    assert conf["debug"] is True
    assert conf["max-retries"] == 3
    assert path.stat().st_mode & 0o777 == 0o600


def test_set_refuses_unknown_key_and_bad_value(tmp_path: Path) -> None:
    path = str(tmp_path / "crictl.yaml")
    with pytest.raises(ClientError, match="no configuration option named colour"):
        clientconfig.run(path, None, ("colour=red",), False, ())
    with pytest.raises(ClientError, match="not a whole number"):
        clientconfig.run(path, None, (), False, ("timeout", "soon"))
