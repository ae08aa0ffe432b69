"""containers-registries.conf(5) v2: table choice, rewriting, mirrors, drop-ins and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from crib.errors import ConfigError, PermissionDenied
from crib.images import reference, registries_conf
from crib.images.registries_conf import Endpoint

D64 = "sha256:" + "c" * 64

# The shape of the conformance bed's file (offline mirrors of public names), written here so that the
# tests do not depend on anything outside the repository.
BED = """
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"

[[registry]]
prefix = "registry.k8s.io"
location = "registry.k8s.io"
[[registry.mirror]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
prefix = "gcr.io"
location = "gcr.io"
[[registry.mirror]]
location = "127.0.0.1:5000"
insecure = true
"""


def conf(text: str) -> registries_conf.RegistriesConf:
    regs, search = registries_conf.parse_text(text, "test.conf")
    return registries_conf.RegistriesConf(registries=tuple(regs),
                                          unqualified_search_registries=tuple(search or ()))


def endpoints(c: registries_conf.RegistriesConf, ref: str) -> list[tuple[str, str, str, bool, bool]]:
    return [(e.host, e.repository, e.target, e.insecure, e.mirror) for e in c.endpoints(reference.parse(ref))]


def test_bed_file_mirrors_public_names_to_the_local_registry() -> None:
    c = conf(BED)
    assert c.unqualified_search_registries == ("docker.io",)
    assert endpoints(c, "registry.k8s.io/e2e-test-images/busybox:1.29-2") == [
        ("127.0.0.1:5000", "e2e-test-images/busybox", "1.29-2", True, True),
        ("registry.k8s.io", "e2e-test-images/busybox", "1.29-2", False, False),
    ]
    assert endpoints(c, "gcr.io/k8s-staging-cri-tools/test-image-tag:test")[0][:3] == (
        "127.0.0.1:5000", "k8s-staging-cri-tools/test-image-tag", "test")


def test_no_matching_table_means_the_reference_itself() -> None:
    assert endpoints(conf(BED), "quay.io/a/b:c") == [("quay.io", "a/b", "c", False, False)]
    assert endpoints(conf(""), f"busybox@{D64}") == [("docker.io", "library/busybox", D64, False, False)]


def test_longest_prefix_wins_at_a_name_boundary() -> None:
    c = conf("""
[[registry]]
prefix = "example.com"
location = "one.example"
[[registry]]
prefix = "example.com/team"
location = "two.example/mirror/team"
[[registry]]
prefix = "example.com/te"
location = "three.example"
""")
    assert endpoints(c, "example.com/team/app:1") == [("two.example", "mirror/team/app", "1", False, False)]
    assert endpoints(c, "example.com/teams/app:1") == [("one.example", "teams/app", "1", False, False)]
    assert endpoints(c, "example.com/other:1") == [("one.example", "other", "1", False, False)]


def test_prefix_with_a_tag_rewrites_the_tag_too() -> None:
    c = conf('[[registry]]\nprefix = "example.com/app:old"\nlocation = "mirror.example/app:new"\n')
    assert endpoints(c, "example.com/app:old") == [("mirror.example", "app", "new", False, False)]
    assert endpoints(c, "example.com/app:other") == [("example.com", "app", "other", False, False)]


def test_wildcard_prefix_keeps_the_name_and_applies_settings() -> None:
    c = conf("""
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry.mirror]]
location = "mirror.local/cache"
""")
    assert endpoints(c, "a.b.example.com/x/y:1") == [
        ("a.b.example.com", "x/y", "1", False, True),
        ("a.b.example.com", "x/y", "1", True, False),
    ]
    assert endpoints(c, "example.com/x:1") == [("example.com", "x", "1", False, False)]


@pytest.mark.parametrize(("mode", "by_digest", "uses_mirror"), [
    ("all", False, True), ("all", True, True), ("digest-only", False, False), ("digest-only", True, True),
    ("tag-only", False, True), ("tag-only", True, False),
], ids=["all-tag", "all-digest", "digest-only-tag", "digest-only-digest", "tag-only-tag", "tag-only-digest"])
def test_pull_from_mirror(mode: str, by_digest: bool, uses_mirror: bool) -> None:
    c = conf(f"""
[[registry]]
prefix = "example.com"
location = "example.com"
[[registry.mirror]]
location = "m.local"
pull-from-mirror = "{mode}"
""")
    ref = f"example.com/a@{D64}" if by_digest else "example.com/a:1"
    assert (endpoints(c, ref)[0][0] == "m.local") is uses_mirror


def test_mirror_by_digest_only() -> None:
    c = conf('[[registry]]\nlocation = "example.com"\nmirror-by-digest-only = true\n'
             '[[registry.mirror]]\nlocation = "m.local"\n')
    assert [e[0] for e in endpoints(c, "example.com/a:1")] == ["example.com"]
    assert [e[0] for e in endpoints(c, f"example.com/a@{D64}")] == ["m.local", "example.com"]


def test_blocked_registry_is_refused_by_name() -> None:
    c = conf('[[registry]]\nprefix = "evil.example"\nlocation = "evil.example"\nblocked = true\n')
    with pytest.raises(PermissionDenied, match=r"evil.example/app:latest is blocked .*prefix 'evil.example'"):
        c.endpoints(reference.parse("evil.example/app"))


@pytest.mark.parametrize(("text", "message"), [
    ("[registries.search]\nregistries = ['docker.io']\n", "version 1"),
    ("[[registry]]\nprefix = 'a'\nlocaton = 'b'\n", "unknown key"),
    ("[[registry]]\nlocation = 'http://a.example'\n", "without a scheme"),
    ("[[registry]]\nprefix = '*.a.example'\nlocation = 'b.example'\n", "wildcard"),
    ("[[registry]]\nprefix = 'a*.example'\n", "wildcard"),
    ("[[registry]]\ninsecure = true\n", "prefix or a location"),
    ("[[registry]]\nlocation = 'a'\ninsecure = 'yes'\n", "true or false"),
    ("[[registry]]\nlocation = 'a'\n[[registry.mirror]]\ninsecure = true\n", "no location"),
    ("[[registry]]\nlocation = 'a'\n[[registry.mirror]]\nlocation = 'b'\npull-from-mirror = 'x'\n", "one of"),
    ("unqualified-search-registries = 'docker.io'\n", "array of strings"),
    ("this is not toml", "not valid TOML"),
    ("surprise = 1\n", "unknown top-level"),
], ids=["v1", "typo", "scheme", "wildcard-location", "bad-wildcard", "empty", "type", "mirror-location",
        "pull-mode", "search-type", "toml", "top-level"])
def test_bad_files_are_refused_with_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        registries_conf.parse_text(text, "/etc/x/registries.conf")
    assert "/etc/x/registries.conf" in str(err.value)


def test_drop_ins_override_by_prefix_and_keys(tmp_path: Path) -> None:
    main = tmp_path / "registries.conf"
    main.write_text('unqualified-search-registries = ["docker.io"]\n'
                    '[[registry]]\nprefix = "a.example"\nlocation = "a.example"\n'
                    '[[registry]]\nprefix = "b.example"\nlocation = "b.example"\n')
    drop = tmp_path / "registries.conf.d"
    drop.mkdir()
    (drop / "10-a.conf").write_text('[[registry]]\nprefix = "a.example"\nlocation = "a.example"\nblocked = '
                                    'true\n')
    (drop / "20-search.conf").write_text('unqualified-search-registries = ["quay.io"]\n')
    (drop / "ignored.txt").write_text("not read")
    c = registries_conf.load(main)
    assert c.unqualified_search_registries == ("quay.io",)
    with pytest.raises(PermissionDenied):
        c.endpoints(reference.parse("a.example/x"))
    assert c.endpoints(reference.parse("b.example/x"))[0].host == "b.example"
    assert c.sources == (str(main), str(drop / "10-a.conf"), str(drop / "20-search.conf"))


def test_missing_file_means_no_rewriting(tmp_path: Path) -> None:
    c = registries_conf.load(tmp_path / "absent.conf")
    assert c.registries == ()
    expected = [Endpoint(host="x.example", repository="y", target="latest")]
    assert c.endpoints(reference.parse("x.example/y")) == expected


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True), ("127.8.9.10", True),
    ("[::1]:5000", True), ("10.0.0.1:5000", False), ("registry.k8s.io", False), ("localhost.example", False),
], ids=lambda v: str(v))
def test_loopback_registries_speak_plain_http(host: str, loopback: bool) -> None:
    assert registries_conf.is_loopback(host) is loopback
    assert Endpoint(host=host, repository="a", target="t").plain_http is loopback
