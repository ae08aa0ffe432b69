"""CNI network configuration files: parsing, validation messages, file order, version negotiation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crib.network import conf

BRIDGE = {"type": "bridge", "bridge": "br0", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}


def doc(**over: object) -> bytes:
    base: dict[str, object] = {"cniVersion": "1.0.0", "name": "net1",
                               "plugins": [BRIDGE, {"type": "portmap",
                                                    "capabilities": {"portMappings": True}}]}
    base.update(over)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_conflist_keeps_every_plugin_key_and_the_raw_bytes() -> None:
    raw = doc(plugins=[{**BRIDGE, "someUnknownKey": [1, 2]}])
    c = conf.parse(raw, "/etc/cni/net.d/10-a.conflist")
    assert c.name == "net1"
    assert c.types == ("bridge",)
    assert c.plugin_objects()[0]["someUnknownKey"] == [1, 2]
    assert c.raw == raw
    assert c.source == "/etc/cni/net.d/10-a.conflist"


def test_legacy_single_plugin_conf_is_a_list_of_one() -> None:
    raw = json.dumps({"cniVersion": "0.3.1", "name": "old", **BRIDGE}).encode()
    c = conf.parse(raw, "/x/10-old.conf")
    assert c.types == ("bridge",)
    assert c.plugin_objects()[0]["name"] == "old"  # the whole object goes to the plugin
    assert c.candidate_versions() == ["0.3.1"]


def test_json_file_with_plugins_is_a_list() -> None:
    assert conf.parse(doc(), "/x/a.json").types == ("bridge", "portmap")


def test_flags_are_read() -> None:
    c = conf.parse(doc(disableCheck=True, disableGC=True), "/x/a.conflist")
    assert c.disable_check
    assert c.disable_gc


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (doc(name=None), "\"name\" must be a non-empty string"),
        (doc(name="-bad"), "network name '-bad' must start with a letter or digit"),
        (doc(name="a/b"), "must start with a letter or digit"),
        (doc(cniVersion=None), "\"cniVersion\" must be a non-empty string"),
        (doc(cniVersion="0.2.0"), "cniVersion '0.2.0' is not one crib speaks"),
        (doc(cniVersion="9.9.9", cniVersions=["8.0.0"]), "(cniVersions 8.0.0)"),
        (doc(cniVersions="1.0.0"), "\"cniVersions\" must be a list"),
        (doc(plugins=[]), "\"plugins\" must be a non-empty list"),
        (doc(plugins=None), "\"plugins\" must be a non-empty list"),
        (doc(plugins=[{"bridge": "x"}]), "plugins[0]: \"type\" must be a non-empty string"),
        (doc(plugins=[BRIDGE, "x"]), "plugins[1]: must be a JSON object"),
        (doc(plugins=[{"type": "../bin/sh"}]), "must be a plugin binary name, not a path"),
        (doc(plugins=[{"type": "portmap", "capabilities": ["portMappings"]}]), "\"capabilities\" must be"),
    ],
    ids=["json", "not-object", "no-name", "bad-name", "slash-name", "no-version", "old-version",
         "unknown-versions", "versions-not-list", "empty-plugins", "no-plugins", "no-type",
         "plugin-not-object", "type-path", "capabilities-list"],
)
def test_invalid_configs_say_what_is_wrong(raw: bytes, needle: str) -> None:
    with pytest.raises(conf.ConfInvalid) as info:
        conf.parse(raw, "/etc/cni/net.d/10-x.conflist")
    assert needle in str(info.value)
    assert str(info.value).startswith("/etc/cni/net.d/10-x.conflist")


def test_cniversions_add_candidates_highest_first() -> None:
    c = conf.parse(doc(cniVersion="0.4.0", cniVersions=["1.1.0", "0.3.1", "7.0.0"]), "/x/a.conflist")
    assert c.candidate_versions() == ["1.1.0", "0.4.0", "0.3.1"]


@pytest.mark.parametrize(
    ("declared", "plugins", "expected"),
    [
        (["1.1.0", "1.0.0"], {"bridge": ["1.0.0", "1.1.0"], "portmap": ["1.0.0", "1.1.0"]}, "1.1.0"),
        (["1.1.0", "1.0.0"], {"bridge": ["1.0.0", "1.1.0"], "portmap": ["0.4.0", "1.0.0"]}, "1.0.0"),
        (["1.0.0", "0.4.0"], {"bridge": ["0.4.0"], "portmap": ["0.4.0", "1.0.0"]}, "0.4.0"),
    ],
    ids=["all-new", "one-old-plugin", "oldest-common"],
)
def test_negotiate_picks_highest_common(declared: list[str], plugins: dict[str, list[str]],
                                        expected: str) -> None:
    c = conf.parse(doc(cniVersion=declared[0], cniVersions=declared), "/x/a.conflist")
    assert conf.negotiate(c, plugins) == expected


def test_negotiate_names_the_plugin_that_cannot() -> None:
    c = conf.parse(doc(cniVersion="1.1.0"), "/x/a.conflist")
    with pytest.raises(conf.ConfInvalid, match=r"'bridge' supports CNI versions 0.4.0, 1.0.0, none of 1.1.0"):
        conf.negotiate(c, {"bridge": ["0.4.0", "1.0.0"], "portmap": ["1.1.0"]})


def test_negotiate_without_a_common_version() -> None:
    c = conf.parse(doc(cniVersion="1.0.0", cniVersions=["0.4.0"]), "/x/a.conflist")
    with pytest.raises(conf.ConfInvalid, match="no single CNI version"):
        conf.negotiate(c, {"bridge": ["0.4.0"], "portmap": ["1.0.0"]})


def test_conf_files_order_and_filter(tmp_path: Path) -> None:
    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir()
    d2.mkdir()
    for name in ("20-z.conflist", "10-y.conf", "05-x.json", "99-ignored.txt", ".10-hidden.conflist"):
        (d1 / name).write_text("{}")
    (d1 / "30-dir.conflist").mkdir()
    (d2 / "00-first-in-b.conflist").write_text("{}")
    found = conf.conf_files([str(d1), str(tmp_path / "missing"), str(d2)])
    assert [Path(p).name for p in found] == ["05-x.json", "10-y.conf", "20-z.conflist",
                                             "00-first-in-b.conflist"]


def test_load_files_records_errors_per_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "10-good.conflist", tmp_path / "05-bad.conflist"
    good.write_bytes(doc())
    bad.write_text("{")
    loaded = conf.load_files([str(bad), str(good), str(tmp_path / "gone.conflist")])
    assert loaded[0].conf is None
    assert "not valid JSON" in loaded[0].error
    assert loaded[1].conf is not None
    assert loaded[1].conf.name == "net1"
    assert "cannot read" in loaded[2].error


def test_version_key_orders_semver() -> None:
    ordered = sorted(["1.0.0", "0.10.0", "0.4.0", "x"], key=conf.version_key)
    assert ordered == ["x", "0.4.0", "0.10.0", "1.0.0"]
