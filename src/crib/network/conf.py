"""CNI network configurations: finding, parsing and validating them, and choosing the protocol version.

A configuration is either a `.conflist` (a named list of plugin objects) or a legacy single-plugin `.conf` /
`.json` file, which is treated as a list of one. Files are read from the configured directories in order,
each directory in lexical order of file names (as libcni does). A file that cannot be used is skipped with a
reason; the reasons end up in Status, because "why is my node NotReady" is the first question an operator
asks.

Plugin objects are kept as the JSON text of the file, so that every key crib does not know passes to the
plugin unchanged (spec section 1: runtimes must preserve unknown fields).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Versions crib speaks: 0.3.0 introduced the result format crib parses, 1.1.0 is the current spec.
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CONF_EXTENSIONS = (".conflist", ".conf", ".json")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ConfInvalid(ValueError):
    """A network configuration cannot be used; the message says which file and what to change."""


def version_key(version: str) -> tuple[int, ...]:
    """A sortable form of a CNI semantic version ("0.3.1" -> (0, 3, 1)); unparsable sorts first."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (-1,)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkConfigList:
    """One network: its name, versions and plugin chain, as read from `source`."""

    name: str
    cni_version: str
    cni_versions: tuple[str, ...] = ()
    disable_check: bool = False
    disable_gc: bool = False
    plugins: tuple[str, ...] = ()  # each plugin object as JSON text
    source: str = ""
    raw: bytes = b""  # the bytes the list was built from; cached with each attachment

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(json.loads(p)["type"] for p in self.plugins)

    def plugin_objects(self) -> list[dict[str, Any]]:
        """Fresh (mutable) copies of the plugin objects."""
        return [json.loads(p) for p in self.plugins]

    def candidate_versions(self) -> list[str]:
        """Versions the config declares that crib speaks, highest first (spec: pick the highest)."""
        declared = {self.cni_version, *self.cni_versions}
        return sorted((v for v in declared if v in SUPPORTED_VERSIONS), key=version_key, reverse=True)


def _require_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ConfInvalid(f"{where}: \"{key}\" must be a non-empty string")
    return value


def _check_plugin(obj: Any, where: str) -> str:
    if not isinstance(obj, dict):
        raise ConfInvalid(f"{where}: must be a JSON object")
    ptype = _require_str(obj, "type", where)
    if "/" in ptype or "\\" in ptype or ptype in (".", ".."):
        raise ConfInvalid(f"{where}: \"type\" {ptype!r} must be a plugin binary name, not a path")
    caps = obj.get("capabilities", {})
    if not isinstance(caps, dict):
        raise ConfInvalid(f"{where}: \"capabilities\" must be an object of name: true/false")
    return json.dumps(obj, separators=(",", ":"))


def parse(data: bytes, source: str) -> NetworkConfigList:
    """Parse one configuration file's bytes.

    Raises:
        ConfInvalid: not JSON, or a required key is missing or malformed, or the version is not supported.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfInvalid(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfInvalid(f"{source}: must be a JSON object")
    name = _require_str(doc, "name", source)
    if not _NAME_RE.match(name):
        raise ConfInvalid(f"{source}: network name {name!r} must start with a letter or digit and contain "
                          "only letters, digits, '_', '.' and '-'")
    version = _require_str(doc, "cniVersion", source)
    versions = doc.get("cniVersions", [])
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise ConfInvalid(f"{source}: \"cniVersions\" must be a list of version strings")
    if source.endswith(".conflist") or "plugins" in doc:
        plugins = doc.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise ConfInvalid(f"{source}: \"plugins\" must be a non-empty list of plugin objects")
        texts = tuple(_check_plugin(p, f"{source}: plugins[{i}]") for i, p in enumerate(plugins))
    else:
        # A legacy single-plugin file: the whole object is the plugin's configuration.
        texts = (_check_plugin(doc, source),)
    conf = NetworkConfigList(
        name=name, cni_version=version, cni_versions=tuple(versions),
        disable_check=bool(doc.get("disableCheck", False)), disable_gc=bool(doc.get("disableGC", False)),
        plugins=texts, source=source, raw=bytes(data),
    )
    if not conf.candidate_versions():
        raise ConfInvalid(f"{source}: cniVersion {version!r}"
                          + (f" (cniVersions {', '.join(versions)})" if versions else "")
                          + f" is not one crib speaks; use one of {', '.join(SUPPORTED_VERSIONS)}")
    return conf


def from_cached(raw: bytes) -> NetworkConfigList:
    """Rebuild the list an attachment was added with from its cached bytes (no version filtering)."""
    return parse(raw, "(cached config)")


def conf_files(dirs: Sequence[str]) -> list[str]:
    """Configuration files in the directories, each directory in lexical order; missing dirs are skipped."""
    found: list[str] = []
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            path = os.path.join(d, name)
            if name.startswith(".") or not name.endswith(CONF_EXTENSIONS) or not os.path.isfile(path):
                continue
            found.append(path)
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """The outcome of reading one file: a usable list, or why not."""

    path: str
    conf: NetworkConfigList | None = None
    error: str = ""


def load_files(paths: Iterable[str]) -> list[Loaded]:
    """Read and parse each file; errors are recorded per file, never raised."""
    out: list[Loaded] = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            out.append(Loaded(path=path, error=f"{path}: cannot read: {exc.strerror or exc}"))
            continue
        try:
            out.append(Loaded(path=path, conf=parse(data, path)))
        except ConfInvalid as exc:
            out.append(Loaded(path=path, error=str(exc)))
    return out


def negotiate(conf: NetworkConfigList, plugin_versions: Mapping[str, Sequence[str]]) -> str:
    """The highest version the config declares that crib and every plugin of the chain support.

    Args:
        conf: the network.
        plugin_versions: plugin type -> versions its VERSION command reported.

    Raises:
        ConfInvalid: no common version; the message names the plugin that lacks it.
    """
    candidates = conf.candidate_versions()
    for version in candidates:
        if all(version in plugin_versions.get(t, ()) for t in conf.types):
            return version
    for t in conf.types:
        supported = plugin_versions.get(t, ())
        if not any(v in supported for v in candidates):
            raise ConfInvalid(f"{conf.source}: plugin {t!r} supports CNI versions {', '.join(supported)}, "
                              f"none of {', '.join(candidates)} the config declares; change cniVersion "
                              "(or add cniVersions) or install a newer plugin")
    raise ConfInvalid(f"{conf.source}: no single CNI version among {', '.join(candidates)} is supported by "
                      f"every plugin of the chain ({', '.join(conf.types)}); list a common one in "
                      "cniVersions")


__all__ = [
    "CONF_EXTENSIONS",
    "SUPPORTED_VERSIONS",
    "ConfInvalid",
    "Loaded",
    "NetworkConfigList",
    "conf_files",
    "from_cached",
    "load_files",
    "negotiate",
    "parse",
    "version_key",
]
