"""The conflist crib writes, and the change watcher's fingerprint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crib.network import conf, defaults
from crib.network.watch import Watcher, fingerprint


def test_default_conflist_shape() -> None:
    doc = defaults.render(subnets="10.88.0.0/16", bridge="crib0", data_dir="/var/lib/crib/cni/networks")
    assert [p["type"] for p in doc["plugins"]] == ["bridge", "portmap", "loopback"]
    bridge = doc["plugins"][0]
    assert bridge["bridge"] == "crib0"
    assert bridge["isGateway"]
    assert bridge["ipMasq"]
    assert bridge["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/var/lib/crib/cni/networks"}
    assert doc["plugins"][1]["capabilities"] == {"portMappings": True}
    parsed = conf.parse(json.dumps(doc).encode(), "x.conflist")  # crib reads back what it writes
    assert parsed.name == defaults.NETWORK_NAME
    assert parsed.cni_version == defaults.CNI_VERSION


def test_dual_stack_and_extras() -> None:
    doc = defaults.render(subnets="fd88::/64, 10.88.0.0/16", bridge="b", data_dir="/d",
                          extra_plugins=["bandwidth", "firewall", "tuning"],
                          pod_cidr="fd88::/64,10.88.0.0/16")
    ipam = doc["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.88.0.0/16"}], [{"subnet": "fd88::/64"}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert [p["type"] for p in doc["plugins"]] == ["bridge", "portmap", "firewall", "tuning", "bandwidth",
                                                   "loopback"]
    assert doc[defaults.POD_CIDR_KEY] == "fd88::/64,10.88.0.0/16"


@pytest.mark.parametrize(
    ("text", "needle"),
    [("10.0.0.0/8,10.1.0.0/16", "more than one IPv4"), ("10.0.0.1/8", "host bits set"), ("", "no subnet"),
     ("banana", "does not appear to be")],
    ids=["two-v4", "host-bits", "empty", "garbage"],
)
def test_bad_subnets(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        defaults.parse_subnets(text)


def test_write_is_atomic_and_reports_changes(tmp_path: Path) -> None:
    path = tmp_path / "net.d" / defaults.FILE_NAME
    doc = defaults.render(subnets="10.88.0.0/16", bridge="crib0", data_dir="/d")
    assert defaults.write(path, doc) is True
    assert defaults.write(path, doc) is False
    assert os.listdir(path.parent) == [defaults.FILE_NAME]
    assert defaults.owned_pod_cidr(path) == ""
    mine = json.loads(path.read_text())
    del mine[defaults.MARKER]
    path.write_text(json.dumps(mine))
    assert defaults.owned_pod_cidr(path) is None
    assert defaults.owned_pod_cidr(tmp_path / "missing") is None


def test_fingerprint_sees_content_new_files_and_missing_dirs(tmp_path: Path) -> None:
    d = tmp_path / "d"
    before = fingerprint([str(d)])
    d.mkdir()
    created = fingerprint([str(d)])
    assert created != before
    (d / "a.conflist").write_text("{}")
    with_file = fingerprint([str(d)])
    assert with_file != created
    (d / "a.conflist").write_text('{"name": "x"}')
    assert fingerprint([str(d)]) != with_file
    assert fingerprint([str(d)]) == fingerprint([str(d)])


async def test_watcher_calls_back_once_per_change(tmp_path: Path) -> None:
    calls: list[int] = []

    async def changed() -> None:
        calls.append(1)

    w = Watcher([str(tmp_path)], changed)
    w.mark_seen()
    assert await w.poll_once() is False
    (tmp_path / "x.conf").write_text("{}")
    assert await w.poll_once() is True
    assert await w.poll_once() is False
    assert calls == [1]


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[network]\ndefault_bridge = "averyveryverylongname"\n', "must be a Linux interface name"),
        ('[network]\ndefault_bridge = "br/0"\n', "must be a Linux interface name"),
        ('[network]\ndefault_extra_plugins = ["flannel"]\n', "'flannel' is not one of"),
        ('[network]\ndefault_subnet = "10.0.0.0/8,banana"\n', "network.default_subnet"),
        ('[network]\nplugin_timeout = "0"\n', "network.plugin_timeout must be more than 0"),
    ],
    ids=["bridge-too-long", "bridge-slash", "unknown-extra", "bad-subnet", "zero-timeout"],
)
def test_network_config_keys_are_checked(tmp_path: Path, toml: str, needle: str) -> None:
    from crib import config
    from crib.errors import ConfigError

    (tmp_path / "crib.toml").write_text(toml)
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match=needle):
        config.load(str(tmp_path / "crib.toml"), str(tmp_path / "d"))


def test_network_config_defaults_and_dual_stack(tmp_path: Path) -> None:
    from crib import config

    (tmp_path / "crib.toml").write_text('[network]\ndefault_subnet = "10.88.0.0/16,fd88::/64"\n'
                                        'plugin_timeout = "90s"\ndefault_extra_plugins = ["firewall"]\n')
    (tmp_path / "d").mkdir()
    cfg = config.load(str(tmp_path / "crib.toml"), str(tmp_path / "d"))
    assert cfg.network.default_subnet == "10.88.0.0/16,fd88::/64"
    assert cfg.network.plugin_timeout == 90.0
    assert cfg.network.default_bridge == "crib0"
    assert cfg.network.default_extra_plugins == ["firewall"]
