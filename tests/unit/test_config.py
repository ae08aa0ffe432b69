"""Config precedence and every error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from crib import config
from crib.config import Duration
from crib.errors import ConfigError


@pytest.fixture
def no_files(tmp_path: Path) -> tuple[str, str]:
    """A main-file path that does not exist and an empty drop-in dir: embedded defaults only."""
    (tmp_path / "d").mkdir()
    return str(tmp_path / "absent.toml"), str(tmp_path / "d")


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_embedded_defaults_need_no_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    cfg = config.load(None, str(tmp_path / "d"))  # default /etc/crib/crib.toml absent on a fresh host
    assert cfg.root == "/var/lib/crib"
    assert cfg.runroot == "/run/crib"
    assert cfg.listen == "unix:///run/crib/crib.sock"
    assert cfg.runtime.default_handler == "runc"
    assert cfg.runtime.handlers["runc"].path == "/usr/sbin/runc"
    assert cfg.handler_root("runc") == "/run/crib/runc"
    assert cfg.image.pull_progress_timeout == 60.0
    assert cfg.network.plugin_dirs == ["/opt/cni/bin", "/usr/lib/cni"]
    assert cfg.network.default_subnet == "10.88.0.0/16"
    assert cfg.stream.port == 0
    assert cfg.metrics.address == ""


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.toml"), str(tmp_path))


def test_precedence_file_then_dropins_in_lexical_order_then_flags(tmp_path: Path) -> None:
    main = write(tmp_path / "crib.toml", 'root = "/from/main"\nrunroot = "/run/main"\nlog_level = "debug"\n')
    write(tmp_path / "d" / "20-b.toml", 'root = "/from/20"\n[image]\npinned_images = ["a"]\n')
    write(tmp_path / "d" / "10-a.toml", 'root = "/from/10"\nrunroot = "/run/10"\n')
    write(tmp_path / "d" / "ignored.conf", 'root = "/never"\n')
    cfg = config.load(main, str(tmp_path / "d"), {"log_level": "warning"})
    assert cfg.root == "/from/20"  # 20-b.toml comes after 10-a.toml
    assert cfg.runroot == "/run/10"
    assert cfg.log_level == "warning"  # flags win
    assert cfg.image.pinned_images == ["a"]
    assert cfg.image.registries_conf == "/etc/containers/registries.conf"  # untouched keys keep defaults


def test_handler_tables_merge_per_handler(tmp_path: Path, no_files: tuple[str, str]) -> None:
    main = write(tmp_path / "crib.toml", """
[runtime]
default_handler = "runsc"
[runtime.handlers.runsc]
path = "/usr/bin/runsc"
[runtime.handlers.runc]
root = "/run/myrunc"
""")
    cfg = config.load(main, no_files[1])
    assert cfg.runtime.handlers["runsc"].path == "/usr/bin/runsc"
    assert cfg.handler_root("runsc") == "/run/crib/runsc"
    assert cfg.runtime.handlers["runc"].path == "/usr/sbin/runc"  # default kept
    assert cfg.handler_root("runc") == "/run/myrunc"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('rooot = "/x"\n', "unknown key 'rooot'"),
        ('[runtime]\nconmon_path = "/x"\n', "unknown key 'runtime.conmon_path' in [runtime]"),
        ('[runtime.handlers.runc]\nbinary = "/x"\n', "unknown key 'runtime.handlers.runc.binary'"),
        ("root = 5\n", "root must be a string, got int 5"),
        ('[stream]\nport = "80"\n', "stream.port must be an integer"),
        ("[stream]\nport = true\n", "stream.port must be an integer"),
        ('[network]\nwrite_default_conflist = "yes"\n', "must be a boolean"),
        ('[network]\nconf_dirs = "/etc/cni"\n', "network.conf_dirs must be a list of strings"),
        ("[network]\nconf_dirs = [1]\n", "network.conf_dirs[0] must be a string"),
        ("[image]\npull_progress_timeout = 60\n", "must be a duration string"),
        ('[image]\npull_progress_timeout = "soon"\n', "is not a duration"),
        ('runtime = "runc"\n', "runtime must be a table"),
        ("root = \n", "not valid TOML"),
    ],
    ids=["unknown-top", "unknown-table", "unknown-handler-key", "str-got-int", "int-got-str",
         "int-got-bool", "bool-got-str", "list-got-str", "list-item-type", "duration-got-int",
         "duration-unparsable", "table-got-str", "bad-toml"],
)
def test_file_errors_name_the_file_and_key(tmp_path: Path, no_files: tuple[str, str], text: str,
                                           needle: str) -> None:
    path = write(tmp_path / "crib.toml", text)
    with pytest.raises(ConfigError) as info:
        config.load(path, no_files[1])
    assert needle in str(info.value)
    assert path in str(info.value)


def test_error_in_dropin_names_the_dropin(tmp_path: Path) -> None:
    bad = write(tmp_path / "d" / "50-bad.toml", "[image]\nauth = 1\n")
    with pytest.raises(ConfigError, match=r"50-bad\.toml: unknown key 'image\.auth'") as info:
        config.load(None, str(tmp_path / "d"))
    assert bad in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"log_level": "loud"}, "log_level 'loud' must be one of"),
        ({"log_format": "xml"}, "log_format 'xml' must be one of"),
        ({"listen": "tcp://0.0.0.0:1"}, "must be a unix socket URL"),
        ({"root": "relative/dir"}, "root 'relative/dir' must be an absolute path"),
        ({"runtime": {"default_handler": "kata"}}, "has no [runtime.handlers.kata] table"),
        ({"runtime": {"cgroup_driver": "magic"}}, "runtime.cgroup_driver 'magic'"),
        ({"network": {"default_subnet": "10.88.0.0/33"}}, "network.default_subnet"),
        ({"stream": {"port": 70000}}, "stream.port 70000"),
    ],
    ids=["level", "format", "listen", "relative-root", "handler", "cgroup-driver", "subnet", "port"],
)
def test_inconsistent_values_are_refused(no_files: tuple[str, str], overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(None, no_files[1], overrides)
    assert needle in str(info.value)
    assert "command line" in str(info.value)


def test_flag_with_unknown_key_is_refused(no_files: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match="command line: unknown key 'bogus'"):
        config.load(None, no_files[1], {"bogus": "1"})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("60s", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("1.5s", 1.5)],
    ids=["zero", "seconds", "minutes-seconds", "millis", "hours", "fraction"],
)
def test_duration_parse(text: str, seconds: float) -> None:
    assert Duration.parse(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "s", "5x", "1m 30s", "-1s"], ids=str)
def test_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked through load() above
        Duration.parse(text)


def test_render_toml_reads_back_identically(tmp_path: Path, no_files: tuple[str, str]) -> None:
    main = write(tmp_path / "crib.toml", """
log_format = "json"
[runtime.handlers.runsc]
path = "/usr/bin/runsc"
[image]
pinned_images = ["registry.k8s.io/pause:3.10"]
pull_progress_timeout = "1m30s"
[network]
write_default_conflist = false
""")
    cfg = config.load(main, no_files[1])
    rendered = config.render_toml(cfg)
    assert "# CRI endpoint (unix://PATH)." in rendered  # commented, like `crio config`
    assert "[runtime.handlers.runsc]" in rendered
    again = config.load(write(tmp_path / "rendered.toml", rendered), no_files[1])
    assert again == cfg


def test_to_dict_is_json_ready() -> None:
    doc = config.to_dict(config.default())
    assert doc["image"]["pull_progress_timeout"] == "60s"
    assert doc["runtime"]["handlers"]["runc"] == {"path": "/usr/sbin/runc", "root": "", "runtime_args": [],
                                                  "sandboxed": False, "allowed_annotations": ["*"]}
