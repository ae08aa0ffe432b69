"""containers-registries.conf(5), version 2: where a reference is really pulled from.

The file node operators already maintain for CRI-O and podman:

    unqualified-search-registries = ["docker.io"]
    [[registry]]
    prefix = "registry.k8s.io"          # which references this table applies to
    location = "registry.k8s.io"        # where they really live (the prefix is rewritten to this)
    insecure = false                    # plain HTTP / unverified TLS allowed
    blocked = false                     # refuse pulls
    [[registry.mirror]]                 # tried in order before the location
    location = "127.0.0.1:5000"
    insecure = true

Rules kept from the man page: the table with the longest matching prefix wins; a prefix matches at a
boundary of the name (`/`, `:` or `@` follows it, or the name ends); a prefix of the form `*.example.com`
matches any sub-domain and rewrites nothing; a missing prefix defaults to the location. Drop-ins in
`registries.conf.d/*.conf` next to the file are read in lexical order: a table with the same prefix
replaces the earlier one, top-level keys override. `pull-from-mirror` ("all", "digest-only", "tag-only")
and `mirror-by-digest-only` restrict when a mirror is used. Version 1 tables (`[registries.search]`) are
refused with a message saying so. Keys crib has no use for (credential helpers, short-name-mode, aliases)
are accepted and ignored, so an operator's existing file loads unchanged.

Registries on loopback (localhost, 127.0.0.0/8, ::1) are always reached over plain HTTP.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crib.errors import ConfigError, PermissionDenied
from crib.images.reference import Reference

DROP_IN_DIR = "registries.conf.d"
_PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")
_IGNORED_TOP = {"credential-helpers", "short-name-mode", "additional-layer-store-auth-helper", "aliases"}
_REGISTRY_KEYS = {"prefix", "location", "insecure", "blocked", "mirror", "mirror-by-digest-only"}
_MIRROR_KEYS = {"location", "insecure", "pull-from-mirror"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class Registry:
    """One `[[registry]]` table."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One place to try for a reference: a host, the repository path there, and how to talk to it."""

    host: str
    repository: str
    target: str  # the tag or digest to ask this endpoint for
    insecure: bool = False
    mirror: bool = False

    @property
    def plain_http(self) -> bool:
        """Loopback registries speak plain HTTP (the default of every runtime)."""
        return is_loopback(self.host)

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"


def is_loopback(host: str) -> bool:
    """Whether host[:port] names this machine (localhost, 127.0.0.0/8, ::1)."""
    name = host
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_location(location: str) -> tuple[str, str]:
    host, _, path = location.partition("/")
    return host, path


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistriesConf:
    """The merged configuration; `endpoints()` answers where to pull a reference from."""

    registries: tuple[Registry, ...] = ()
    unqualified_search_registries: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=(), compare=False)

    def find(self, ref: Reference) -> Registry | None:
        """The `[[registry]]` table for ref: the longest matching prefix."""
        name = str(ref)
        best: Registry | None = None
        best_len = -1
        for reg in self.registries:
            if reg.prefix.startswith("*."):
                suffix = reg.prefix[1:]  # ".example.com"
                host = ref.domain.split(":", 1)[0]
                if host.endswith(suffix) and len(reg.prefix) > best_len:
                    best, best_len = reg, len(reg.prefix)
                continue
            matches = name == reg.prefix or (name.startswith(reg.prefix) and name[len(reg.prefix)] in "/:@")
            if matches and len(reg.prefix) > best_len:
                best, best_len = reg, len(reg.prefix)
        return best

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where to try ref, in order: usable mirrors, then the registry itself.

        Raises:
            PermissionDenied: the matching table is `blocked`.
        """
        reg = self.find(ref)
        if reg is None:
            return [Endpoint(host=ref.domain, repository=ref.path, target=ref.target)]
        if reg.blocked:
            raise PermissionDenied(
                f"pulling {ref} is blocked by the [[registry]] table with prefix {reg.prefix!r} in "
                f"{', '.join(self.sources) or 'registries.conf'}; set blocked = false to allow it")

        def endpoint(location: str, insecure: bool, mirror: bool) -> Endpoint:
            if reg.prefix.startswith("*.") or not location:
                return Endpoint(host=ref.domain, repository=ref.path, target=ref.target, insecure=insecure,
                                mirror=mirror)
            # As containers/image does: the prefix is replaced by the location in the whole reference, so a
            # prefix naming a tag or digest rewrites that too.
            rewritten = location + str(ref)[len(reg.prefix):]
            host, _, rest = rewritten.partition("/")
            rest, at, digest = rest.partition("@")
            tag = ""
            colon = rest.rfind(":")
            if colon != -1 and "/" not in rest[colon + 1:]:
                rest, tag = rest[:colon], rest[colon + 1:]
            return Endpoint(host=host, repository=rest.strip("/"), target=digest if at else tag,
                            insecure=insecure, mirror=mirror)

        out: list[Endpoint] = []
        by_digest = bool(ref.digest)
        for mirror in reg.mirrors:
            mode = "digest-only" if reg.mirror_by_digest_only else mirror.pull_from_mirror
            if (mode == "digest-only" and not by_digest) or (mode == "tag-only" and by_digest):
                continue
            out.append(endpoint(mirror.location, mirror.insecure, True))
        out.append(endpoint(reg.location, reg.insecure, False))
        return out

    def insecure(self, host: str) -> bool:
        """Whether any table marks host insecure (used for certificate checks of a bare host)."""
        for reg in self.registries:
            if _split_location(reg.location)[0] == host and reg.insecure:
                return True
            if any(_split_location(m.location)[0] == host and m.insecure for m in reg.mirrors):
                return True
        return False


# ---------------------------------------------------------------------------------------------- loading


def _bool(value: Any, where: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {where} must be true or false, got {value!r}")
    return value


def _str(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {where} must be a string, got {value!r}")
    return value


def _host_path(value: str, where: str, source: str) -> str:
    if "://" in value:
        raise ConfigError(f"{source}: {where} {value!r} must be host[:port][/path] without a scheme "
                          "(set insecure = true for plain HTTP)")
    return value.rstrip("/")


def _check_table(raw: Any, known: set[str], where: str, source: str) -> None:
    """A [[registry]] or [[registry.mirror]] entry must be a table holding only keys crib knows."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a table")
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))} in {where}; known: "
                          f"{', '.join(sorted(known))}")


def _parse_mirror(raw: Any, where: str, source: str) -> Mirror:
    _check_table(raw, _MIRROR_KEYS, where, source)
    location = _host_path(_str(raw.get("location", ""), f"{where}.location", source), f"{where}.location",
                          source)
    if not location:
        raise ConfigError(f"{source}: {where} has no location")
    pull = _str(raw.get("pull-from-mirror", "all"), f"{where}.pull-from-mirror", source)
    if pull not in _PULL_FROM_MIRROR:
        raise ConfigError(f"{source}: {where}.pull-from-mirror must be one of "
                          f"{', '.join(_PULL_FROM_MIRROR)}, got {pull!r}")
    return Mirror(location=location, insecure=_bool(raw.get("insecure", False), f"{where}.insecure", source),
                  pull_from_mirror=pull)


def _parse_registry(raw: Any, index: int, source: str) -> Registry:
    where = f"[[registry]] #{index + 1}"
    _check_table(raw, _REGISTRY_KEYS, where, source)
    location = _host_path(_str(raw.get("location", ""), f"{where}.location", source), f"{where}.location",
                          source)
    prefix = _host_path(_str(raw.get("prefix", ""), f"{where}.prefix", source), f"{where}.prefix", source)
    prefix = prefix or location
    if not prefix:
        raise ConfigError(f"{source}: {where} needs a prefix or a location")
    if prefix.startswith("*.") and location:
        raise ConfigError(f"{source}: {where} has the wildcard prefix {prefix!r} and a location; a wildcard "
                          "prefix rewrites nothing, remove location")
    if "*" in prefix and not prefix.startswith("*."):
        raise ConfigError(f"{source}: {where} prefix {prefix!r}: a wildcard is only allowed as \"*.domain\"")
    mirrors_raw = raw.get("mirror", [])
    if not isinstance(mirrors_raw, list):
        raise ConfigError(f"{source}: {where}.mirror must be an array of tables ([[registry.mirror]])")
    mirrors = tuple(_parse_mirror(m, f"{where} mirror #{i + 1}", source) for i, m in enumerate(mirrors_raw))
    return Registry(
        prefix=prefix, location=location,
        insecure=_bool(raw.get("insecure", False), f"{where}.insecure", source),
        blocked=_bool(raw.get("blocked", False), f"{where}.blocked", source),
        mirror_by_digest_only=_bool(raw.get("mirror-by-digest-only", False), f"{where}.mirror-by-digest-only",
                                    source),
        mirrors=mirrors,
    )


def parse_text(text: str, source: str = "registries.conf") -> tuple[list[Registry], list[str] | None]:
    """One file's tables and its unqualified-search-registries (None when the file does not set it).

    Raises:
        ConfigError: not TOML, version 1 syntax, unknown keys, wrong types.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    if "registries" in data:
        raise ConfigError(f"{source}: this is the version 1 format ([registries.search] / "
                          "[registries.insecure]);"
                          " crib reads version 2: [[registry]] tables with prefix, location and "
                          "[[registry.mirror]]")
    unknown = set(data) - _IGNORED_TOP - {"registry", "unqualified-search-registries"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    raw_regs = data.get("registry", [])
    if not isinstance(raw_regs, list):
        raise ConfigError(f"{source}: registry must be an array of tables ([[registry]])")
    search: list[str] | None = None
    if "unqualified-search-registries" in data:
        value = data["unqualified-search-registries"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: unqualified-search-registries must be an array of strings")
        search = list(value)
    return [_parse_registry(r, i, source) for i, r in enumerate(raw_regs)], search


def load(path: str | Path) -> RegistriesConf:
    """Read the file and its drop-ins; a missing file means no rewriting at all.

    Raises:
        ConfigError: a file exists but cannot be used (see parse_text).
    """
    main = Path(path)
    files: list[Path] = []
    if main.is_file():
        files.append(main)
    drop_dir = main.parent / DROP_IN_DIR
    if drop_dir.is_dir():
        files += sorted(p for p in drop_dir.glob("*.conf") if p.is_file())
    by_prefix: dict[str, Registry] = {}
    search: list[str] = []
    for file in files:
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc
        regs, file_search = parse_text(text, str(file))
        for reg in regs:
            by_prefix[reg.prefix] = reg  # same prefix: the later file's table replaces the earlier one
        if file_search is not None:
            search = file_search
    return RegistriesConf(registries=tuple(by_prefix.values()), unqualified_search_registries=tuple(search),
                          sources=tuple(str(f) for f in files))


__all__ = ["Endpoint", "Mirror", "RegistriesConf", "Registry", "is_loopback", "load", "parse_text"]
