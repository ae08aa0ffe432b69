"""`crib version` and `crib info` against crib and against containerd, through every endpoint source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.containerd import Containerd
from tests.fixtures.daemon import CribDaemon


def crib_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "crib", *args], capture_output=True, text=True,
                          timeout=60, env=full_env, check=False)


def test_version_against_crib_by_flag(crib: CribDaemon) -> None:
    out = crib_cli("-r", crib.endpoint, "version")
    assert out.returncode == 0, out.stderr
    assert "RuntimeName:  crib" in out.stdout
    assert "Version:  0.1.0" in out.stdout


def test_endpoint_from_environment_and_bare_path(crib: CribDaemon) -> None:
    out = crib_cli("version", env={"CONTAINER_RUNTIME_ENDPOINT": str(crib.socket)})
    assert out.returncode == 0, out.stderr
    assert "RuntimeName:  crib" in out.stdout


def test_info_prints_json_with_conditions(crib: CribDaemon) -> None:
    out = crib_cli("-r", crib.endpoint, "info")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    types = {c["type"] for c in doc["status"]["conditions"]}
    assert types >= {"RuntimeReady", "NetworkReady"}
    assert doc["config"]["root"] == str(crib.root)


def test_unreachable_endpoint_says_so(tmp_path: Path) -> None:
    out = crib_cli("-r", f"unix://{tmp_path}/nothing.sock", "-t", "2", "version")
    assert out.returncode == 1
    assert "cannot reach the runtime" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture
def containerd(tmp_path: Path):
    with Containerd(tmp_path / "containerd", cni_conf_dir=str(tmp_path / "no-cni")) as ctd:
        yield ctd


def test_version_and_info_against_containerd(containerd: Containerd) -> None:
    out = crib_cli("-r", containerd.endpoint, "version")
    assert out.returncode == 0, out.stderr
    assert "RuntimeName:  containerd" in out.stdout
    assert "RuntimeApiVersion:  v1" in out.stdout
    info = crib_cli("-r", containerd.endpoint, "info")
    assert info.returncode == 0, info.stderr
    doc = json.loads(info.stdout)
    assert {c["type"] for c in doc["status"]["conditions"]} >= {"RuntimeReady", "NetworkReady"}
    assert "cniconfig" in doc  # containerd's own verbose info, parsed as JSON
