"""The client's settings, errors and runtime commands against crib; the read-only ones against containerd."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.fixtures import images as img
from tests.fixtures.containerd import Containerd
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.registry import LocalRegistry
from tests.integration.cli_helpers import Cli, crib_cli


def _version(text: str) -> dict[str, str]:
    return dict(line.split(":  ", 1) for line in text.splitlines())


def test_version_against_crib_by_flag(crib: CribDaemon) -> None:
    out = crib_cli("version", endpoint=crib.endpoint)
    assert out.returncode == 0, out.stderr
    assert _version(out.stdout) == {"Version": "0.1.0", "RuntimeName": "crib", "RuntimeVersion": "0.1.0",
                                    "RuntimeApiVersion": "v1"}


def test_endpoint_from_environment_and_bare_path(crib: CribDaemon) -> None:
    out = crib_cli("version", env={"CONTAINER_RUNTIME_ENDPOINT": str(crib.socket)})
    assert out.returncode == 0, out.stderr
    assert _version(out.stdout)["RuntimeName"] == "crib"


def test_endpoint_timeout_and_debug_from_client_config(crib: CribDaemon, tmp_path: Path) -> None:
    conf = tmp_path / "crictl.yaml"
    conf.write_text(f"runtime-endpoint: {crib.endpoint}\ntimeout: 5\n")
    assert crib_cli("-c", str(conf), "version").returncode == 0
    by_env = crib_cli("--debug", "version", env={"CRI_CONFIG_FILE": str(conf)})
    assert by_env.returncode == 0, by_env.stderr
    assert f"connected to {crib.endpoint} (from {conf}), timeout 5s" in by_env.stderr
    assert 'DEBU VersionRequest: version: "v1"' in by_env.stderr
    assert "timeout 90s" in crib_cli("-c", str(conf), "-t", "1m30s", "-D", "version").stderr
    missing = crib_cli("-c", str(tmp_path / "nope.yaml"), "version")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    bad = crib_cli("-t", "soon", "version", endpoint=crib.endpoint)
    assert bad.returncode == 1
    assert "1m30s" in bad.stderr


def test_client_config_set_get_list(tmp_path: Path) -> None:
    conf = str(tmp_path / "etc" / "crictl.yaml")
    setting = crib_cli("-c", conf, "config", "--set", "runtime-endpoint=unix:///x.sock,timeout=4")
    assert setting.returncode == 0, setting.stderr
    assert crib_cli("-c", conf, "config", "debug", "true").returncode == 0
    assert crib_cli("-c", conf, "config", "--get", "timeout").stdout == "4\n"
    listed = crib_cli("-c", conf, "config", "--list").stdout.splitlines()[1:]
    rows = dict(line.split(None, 1) for line in listed if len(line.split()) == 2)
    assert rows["runtime-endpoint"] == "unix:///x.sock"
    assert rows["debug"] == "true"
    refused = crib_cli("-c", conf, "config", "--set", "colour=red")
    assert refused.returncode == 1
    assert "no configuration option named colour" in refused.stderr


def test_info_runtime_config_and_completion(crib: CribDaemon) -> None:
    cli = Cli(crib.endpoint)
    doc = json.loads(cli.ok("info"))
    assert {c["type"] for c in doc["status"]["conditions"]} >= {"RuntimeReady", "NetworkReady"}
    assert doc["config"]["root"] == str(crib.root)
    quiet = cli.yaml("info", "-q")
    assert "config" not in quiet
    assert quiet["status"]["conditions"][0]["status"] is True
    assert cli.ok("runtime-config").split() == ["cgroup", "driver:", "CGROUPFS"]
    assert cli.run("update-runtime-config", "-p", "10.99.0.0/24").returncode == 0
    assert "give --pod-cidr" in cli.fails("update-runtime-config", code=2)
    for shell in ("bash", "zsh", "fish"):
        assert "_CRIB_COMPLETE" in crib_cli("completion", shell).stdout


def test_errors_are_one_line_with_code_and_hint(crib: CribDaemon, tmp_path: Path) -> None:
    cli = Cli(crib.endpoint)
    missing = cli.fails("inspect", "0123456789ab")
    assert missing.startswith("crib: NOT_FOUND: ")
    assert len(missing.splitlines()) == 1
    bad = tmp_path / "pod.yaml"
    bad.write_text("metadata: {name: a, namespace: b}\nport_mapping: []\n")
    err = cli.fails("runp", str(bad))
    assert f"{bad}: unknown field 'port_mapping'" in err
    assert "did you mean 'port_mappings'" in err
    gone = crib_cli("-r", f"unix://{tmp_path}/nothing.sock", "version")
    assert gone.returncode == 1
    assert gone.stderr.startswith("crib: UNAVAILABLE: cannot reach the runtime")
    assert "is the daemon running? `make run` starts it" in gone.stderr
    assert len(gone.stderr.splitlines()) == 1


@pytest.fixture
def containerd(tmp_path: Path, registry: LocalRegistry):
    # A short directory: containerd refuses socket paths over 104 bytes, which tmp_path can exceed.
    short = Path(tempfile.mkdtemp(prefix="ctrd-cli-"))
    try:
        with Containerd(short, cni_conf_dir=str(tmp_path / "no-cni"),
                        mirrors={registry.host: registry.url}) as ctd:
            yield ctd
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_read_only_commands_against_containerd(containerd: Containerd, images: img.Catalogue) -> None:
    cli = Cli(containerd.endpoint)
    version = _version(cli.ok("version"))
    assert (version["RuntimeName"], version["RuntimeApiVersion"]) == ("containerd", "v1")
    info = json.loads(cli.ok("info"))
    assert {c["type"] for c in info["status"]["conditions"]} >= {"RuntimeReady", "NetworkReady"}
    assert "cniconfig" in info  # containerd's own verbose info, parsed as JSON
    ref = images.reference(img.BUSYBOX)
    pulled = cli.run("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert "no progress from this runtime" in pulled.stderr
    image_id = images[img.BUSYBOX].image_id
    assert ref in [t for i in cli.json("images")["images"] for t in i["repoTags"]]
    assert image_id in cli.ok("images", "-q").split()
    assert cli.yaml("inspecti", ref)["status"]["id"] == image_id
    assert cli.json("imagefsinfo")["imageFilesystems"]
    assert cli.json("pods")["items"] == []
    assert cli.json("ps", "-a")["containers"] == []
    assert cli.fails("inspect", "0123456789ab").startswith("crib: NOT_FOUND: ")
    assert cli.fails("inspectp", "0123456789ab").startswith("crib: NOT_FOUND: ")
    assert "crib extension" in cli.fails("image", "prune")
