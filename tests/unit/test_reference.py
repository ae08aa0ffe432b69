"""The image reference grammar and its normalization (docker/distribution rules)."""

from __future__ import annotations

import pytest

from crib.errors import InvalidArgument
from crib.images import reference
from crib.images.reference import Reference

D64 = "sha256:" + "a" * 64
D128 = "sha512:" + "b" * 128


@pytest.mark.parametrize(("text", "expected"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
    ("user/app", "docker.io/user/app:latest"),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
    ("registry:5000/a/b:t", "registry:5000/a/b:t"),
    ("localhost/app", "localhost/app:latest"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("127.0.0.1:5000/crib-test/busybox:latest", "127.0.0.1:5000/crib-test/busybox:latest"),
    ("[::1]:5000/app:v1", "[::1]:5000/app:v1"),
    (f"busybox@{D64}", f"docker.io/library/busybox@{D64}"),
    (f"quay.io/a/b:tag@{D64}", f"quay.io/a/b:tag@{D64}"),
    (f"example.com/x@{D128}", f"example.com/x@{D128}"),
    ("a/b__c/d-e.f--g:T_1.x-y", "docker.io/a/b__c/d-e.f--g:T_1.x-y"),
    ("Example.COM/app", "Example.COM/app:latest"),
    ("localhost:5000", "docker.io/library/localhost:5000"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_normalizes(text: str, expected: str) -> None:
    assert str(reference.parse(text)) == expected


def test_parts_of_a_reference() -> None:
    ref = reference.parse(f"registry:5000/a/b:t@{D64}")
    assert ref == Reference(domain="registry:5000", path="a/b", tag="t", digest=D64)
    assert ref.name == "registry:5000/a/b"
    assert ref.tagged == "registry:5000/a/b:t"
    assert ref.digested == f"registry:5000/a/b@{D64}"
    assert ref.target == D64
    plain = reference.parse("busybox")
    assert (plain.target, plain.digested) == ("latest", "")
    assert reference.parse("busybox", default_tag=False).tag == ""


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"),
    ("Busybox", "lower-case"),
    ("docker.io/Library/busybox", "lower-case"),
    ("busybox:", "tag"),
    ("busybox:-bad", "tag"),
    ("busybox:" + "x" * 129, "tag"),
    ("a//b", "repository name"),
    ("a/b/", "repository name"),
    ("-a", "repository name"),
    ("a..b", "repository name"),
    ("bad_host:5000x/a", "registry host"),
    ("busybox@sha256:abc", "sha256"),
    ("busybox@md5:" + "a" * 32, "digest algorithm"),
    (f"busybox@{D64}@{D64}", "more than one"),
    ("a" * 64, "image id"),
    ("has space", "white space"),
    (" busybox", "white space"),
    ("x/" + "a" * 260, "255"),
], ids=lambda v: v[:20] if v else "empty")
def test_refuses_bad_references(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        reference.parse(text)


@pytest.mark.parametrize(("digest", "ok"), [
    (D64, True), (D128, True), ("sha256:" + "A" * 64, False), ("sha256:" + "a" * 63, False),
    ("sha384:" + "a" * 96, False), ("sha256", False), ("", False),
], ids=["sha256", "sha512", "upper", "short", "sha384", "no-hex", "empty"])
def test_check_digest(digest: str, ok: bool) -> None:
    if ok:
        assert reference.check_digest(digest) == digest
    else:
        with pytest.raises(InvalidArgument):
            reference.check_digest(digest)


@pytest.mark.parametrize(("text", "short"), [
    ("busybox", "busybox:latest"),
    ("user/app:1", "user/app:1"),
    ("quay.io/a/b:c", "quay.io/a/b:c"),
    (f"busybox@{D64}", f"busybox@{D64}"),
], ids=["official", "user", "other-registry", "digest"])
def test_familiar_form(text: str, short: str) -> None:
    assert reference.familiar(reference.parse(text)) == short
