"""Image references: the Docker/distribution grammar, normalized the way docker, containerd and CRI-O do.

    reference := name [ ":" tag ] [ "@" digest ]
    name      := [ domain "/" ] path          (at most 255 characters)
    domain    := host [ ":" port ]            (host: DNS name, IPv4, or [IPv6])
    path      := component ( "/" component )*, component := [a-z0-9]+ ( ( [_.] | __ | -+ ) [a-z0-9]+ )*
    tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest    := algorithm ":" hex

Normalization: the first path element is a domain only when it contains "." or ":", or is "localhost" (or
has an upper-case letter, which a path may not); otherwise the domain is docker.io, where a one-element path
gains "library/". index.docker.io is docker.io. A reference with neither tag nor digest gets ":latest".
`busybox` -> `docker.io/library/busybox:latest`. A name that is 64 hex characters is refused: it would be
read as an image id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crib.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

#: Digest algorithms crib verifies, and the length of their hex encoding.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}

_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN_RE = re.compile(rf"{_HOST}(?::[0-9]+)?\Z")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}\Z")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}\Z")
_HEX64_RE = re.compile(r"[a-f0-9]{64}\Z")


def _bad(text: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid image reference {text!r}: {why}")


def check_digest(digest: str, *, what: str = "digest") -> str:
    """Validate `algorithm:hex` for an algorithm crib can verify; returns it unchanged.

    Raises:
        InvalidArgument: malformed, an algorithm other than sha256/sha512, or a wrong hex length.
    """
    algorithm, sep, hexpart = digest.partition(":")
    if not sep or not _DIGEST_RE.match(digest):
        raise InvalidArgument(f"{what} {digest!r} is not of the form sha256:<64 hex characters>")
    if algorithm not in DIGEST_HEX_LENGTHS:
        raise InvalidArgument(
            f"{what} {digest!r} uses the digest algorithm {algorithm!r}; crib supports "
            f"{' and '.join(DIGEST_HEX_LENGTHS)}")
    if len(hexpart) != DIGEST_HEX_LENGTHS[algorithm] or hexpart != hexpart.lower():
        raise InvalidArgument(
            f"{what} {digest!r}: a {algorithm} digest has {DIGEST_HEX_LENGTHS[algorithm]} lower-case hex "
            "characters")
    return digest


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    """A normalized reference. `tag` is "" when the reference pins a digest without a tag."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """`domain/path`, the repository as a whole."""
        return f"{self.domain}/{self.path}"

    @property
    def tagged(self) -> str:
        """`domain/path:tag` (empty when there is no tag)."""
        return f"{self.name}:{self.tag}" if self.tag else ""

    @property
    def digested(self) -> str:
        """`domain/path@digest` (empty when there is no digest)."""
        return f"{self.name}@{self.digest}" if self.digest else ""

    @property
    def target(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag

    def with_digest(self, digest: str) -> Reference:
        return Reference(domain=self.domain, path=self.path, tag=self.tag, digest=digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def split_domain(name: str) -> tuple[str, str]:
    """(domain, path) of an unnormalized name, following docker's rule (see the module note)."""
    first, sep, rest = name.partition("/")
    if not sep or (not any(c in first for c in ".:") and first != "localhost" and first == first.lower()):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalize an image reference.

    Args:
        text: what a user or kubelet wrote (`busybox`, `registry:5000/a/b:t`, `x@sha256:...`).
        default_tag: add ":latest" when there is neither tag nor digest.

    Raises:
        InvalidArgument: the text is not a reference; the message says which part is wrong.
    """
    if not text:
        raise InvalidArgument("the image reference is empty; name an image such as \"busybox\" or "
                              "\"registry.k8s.io/pause:3.10\"")
    if text != text.strip() or any(c.isspace() for c in text):
        raise _bad(text, "it contains white space")
    if _HEX64_RE.match(text):
        raise _bad(text, "a 64-character hex string is an image id, not a repository name")
    rest, at, digest = text.partition("@")
    if at:
        if "@" in digest:
            raise _bad(text, "more than one '@'")
        check_digest(digest, what=f"the digest of {text!r}")
    # The tag is after the last ':' unless that ':' belongs to a domain's port (a '/' follows it).
    name, tag = rest, ""
    colon = rest.rfind(":")
    if colon != -1 and "/" not in rest[colon + 1:]:
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.match(tag):
            raise _bad(text, f"tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    if not name:
        raise _bad(text, "the repository name is empty")
    domain, path = split_domain(name)
    if domain != DEFAULT_DOMAIN and not _DOMAIN_RE.match(domain):
        raise _bad(text, f"{domain!r} is not a valid registry host[:port]")
    if path != path.lower():
        raise _bad(text, f"repository name {path!r} must be lower-case")
    if not _PATH_RE.match(path):
        raise _bad(text, f"repository name {path!r} may hold only [a-z0-9] separated by '.', '_', '__', '-' "
                         "or '/', and must not start or end with a separator")
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise _bad(text, f"the name is longer than {NAME_MAX} characters")
    if default_tag and not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def familiar(ref: Reference) -> str:
    """The short form people type (`busybox:latest` for `docker.io/library/busybox:latest`)."""
    path = ref.path
    if ref.domain == DEFAULT_DOMAIN:
        path = path.removeprefix(OFFICIAL_PREFIX)
        out = path
    else:
        out = ref.name
    if ref.tag:
        out += f":{ref.tag}"
    if ref.digest:
        out += f"@{ref.digest}"
    return out


__all__ = [
    "DEFAULT_DOMAIN",
    "DIGEST_HEX_LENGTHS",
    "Reference",
    "check_digest",
    "familiar",
    "parse",
    "split_domain",
]
