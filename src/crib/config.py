"""crib's configuration: embedded defaults < /etc/crib/crib.toml < /etc/crib/crib.d/*.toml < flags.

Every key has a default here, so the daemon runs with no file at all. Each file is checked on its own
before it is merged, so an unknown key or a wrong type is reported with the file that holds it. The key
names are a contract with operators and tooling; add keys, never rename them.

The dataclasses below are the schema: a field's type drives validation, its `doc` metadata becomes the
comment `crib config` prints.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crib.errors import ConfigError

DEFAULT_CONFIG_FILE = "/etc/crib/crib.toml"
DEFAULT_CONFIG_DIR = "/etc/crib/crib.d"


class Duration(float):
    """Seconds, written in files as Go-style durations ("60s", "1m30s", "500ms", "0")."""

    _PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")

    @classmethod
    def parse(cls, text: str) -> Duration:
        text = text.strip()
        if text == "0":
            return cls(0.0)
        pos, total = 0, 0.0
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        while pos < len(text):
            match = cls._PART.match(text, pos)
            if not match:
                raise ValueError(f"{text!r} is not a duration like \"60s\", \"1m30s\" or \"500ms\"")
            total += float(match.group(1)) * scale[match.group(2)]
            pos = match.end()
        if not text:
            raise ValueError("an empty string is not a duration")
        return cls(total)

    def __str__(self) -> str:
        if float(self) == 0.0:
            return "0"
        if float(self).is_integer():
            return f"{int(self)}s"
        return f"{round(self * 1000)}ms"


def _doc(text: str, **kw: Any) -> Any:
    return field(metadata={"doc": text}, **kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerConfig:
    """One OCI runtime, selected by a pod's RuntimeClass handler name."""

    path: str = _doc("Path of the OCI runtime binary (runc-compatible CLI: runc, crun, runsc).",
                     default="/usr/sbin/runc")
    root: str = _doc("State directory passed as --root; empty means <runroot>/<handler name>.", default="")
    runtime_args: list[str] = _doc(
        "Global arguments given to the runtime before every command (e.g. [\"--platform=ptrace\"] for "
        "runsc).",
        default_factory=list)
    sandboxed: bool = _doc(
        "A sandbox or VM runtime (gVisor, Kata): each pod runs in one sandbox started by its infra process, "
        "containers join it, and stats come from `<runtime> events --stats` instead of host cgroups.",
        default=False)
    allowed_annotations: list[str] = _doc(
        "Pod and container annotations passed into the OCI spec (exact keys, or prefixes ending in \"*\"); "
        "crib's own io.kubernetes.cri.* keys are always set.", default_factory=lambda: ["*"])


def _default_handlers() -> dict[str, HandlerConfig]:
    return {"runc": HandlerConfig()}


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeConfig:
    default_handler: str = _doc("Handler used when a pod names no RuntimeClass handler.", default="runc")
    conmon: str = _doc("Path of the conmon container monitor.", default="/usr/bin/conmon")
    cgroup_driver: str = _doc(
        "How cgroups are managed: \"cgroupfs\" (\"systemd\" needs a running systemd).", default="cgroupfs")
    handlers: dict[str, HandlerConfig] = _doc("One table per RuntimeClass handler.",
                                              default_factory=_default_handlers)
    default_cgroup_parent: str = _doc(
        "Cgroup under which a pod that names no cgroup_parent gets its own (<this>/<pod id>).",
        default="/crib")
    shm_size: int = _doc("Size in bytes of each pod's /dev/shm (a tmpfs).", default=64 * 1024 * 1024)
    exec_output_max: int = _doc("ExecSync keeps at most this many bytes of stdout and of stderr.",
                                default=16 * 1024 * 1024)
    create_timeout: Duration = _doc("How long conmon may take to report a container created.",
                                    default=Duration(60.0))
    stop_timeout: Duration = _doc(
        "How long to wait for a container to die after SIGKILL before the stop reports an error.",
        default=Duration(10.0))
    pod_stop_grace: Duration = _doc(
        "Grace period StopPodSandbox gives containers still running (stop signal, then SIGKILL); kubelet "
        "has stopped them with the pod's own grace period before it stops the pod.", default=Duration(0.0))
    log_size_max: int = _doc("Truncate a container's log file at this size in bytes; -1 = unlimited "
                             "(kubelet rotates logs itself).", default=-1)
    infra_binary: str = _doc(
        "Static binary that holds a pod's shared PID namespace (run as `<binary> -P`).",
        default="/usr/bin/catatonit")
    seccomp_profile_root: str = _doc(
        "Directory that relative Localhost seccomp profile paths are resolved against.",
        default="/var/lib/kubelet/seccomp")


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    registries_conf: str = _doc(
        "containers-registries.conf(5) v2 file: mirrors, insecure and blocked registries.",
        default="/etc/containers/registries.conf")
    auth_file: str = _doc("Docker config.json with node-wide registry credentials; empty = none.", default="")
    pull_progress_timeout: Duration = _doc(
        "Cancel a pull that makes no progress for this long; \"0\" = never.", default=Duration(60.0))
    pinned_images: list[str] = _doc("Images never garbage-collected and reported as pinned.",
                                    default_factory=list)
    certs_dir: str = _doc("Per-registry TLS files: <certs_dir>/<host[:port]>/ca.crt (and client .cert/.key).",
                          default="/etc/containers/certs.d")
    max_concurrent_downloads: int = _doc("Layers downloaded and unpacked at the same time, over all pulls.",
                                         default=4)
    max_layer_bytes: int = _doc("Refuse a layer whose uncompressed tar is larger (tar bombs); 0 = no limit.",
                                default=64 * 1024**3)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkConfig:
    conf_dirs: list[str] = _doc("Directories searched for CNI network configs (.conflist, .conf, .json).",
                                default_factory=lambda: ["/etc/cni/net.d"])
    plugin_dirs: list[str] = _doc("Directories searched for CNI plugin binaries.",
                                  default_factory=lambda: ["/opt/cni/bin", "/usr/lib/cni"])
    default_network: str = _doc("Name of the network pods join; empty = the first valid config.", default="")
    write_default_conflist: bool = _doc("Write crib's own bridge conflist when no config exists.",
                                        default=True)
    default_subnet: str = _doc(
        "Subnet(s) of the conflist crib writes, comma-separated for dual stack (\"10.88.0.0/16,fd88::/64\"); "
        "a pod CIDR from UpdateRuntimeConfig replaces it.", default="10.88.0.0/16")
    default_bridge: str = _doc("Linux bridge of the conflist crib writes (at most 15 characters).",
                               default="crib0")
    default_extra_plugins: list[str] = _doc(
        "Optional plugins chained into the conflist crib writes: \"firewall\", \"tuning\", \"bandwidth\".",
        default_factory=list)
    plugin_timeout: Duration = _doc("Bound on one CNI plugin call (ADD, DEL, CHECK, VERSION, ...).",
                                    default=Duration(60.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamConfig:
    address: str = _doc("Address the exec/attach/port-forward server listens on.", default="127.0.0.1")
    port: int = _doc("Port of the streaming server; 0 = pick a free port.", default=0)
    tls_cert: str = _doc("PEM certificate of the streaming server; with tls_key it serves HTTPS. Empty = "
                         "plain HTTP.", default="")
    tls_key: str = _doc("PEM private key of tls_cert.", default="")
    tls_ca: str = _doc("PEM CA bundle; when set, clients must present a certificate signed by it.",
                       default="")
    idle_timeout: Duration = _doc("End a session after this long without a byte either way; \"0\" = never.",
                                  default=Duration(4 * 3600.0))
    creation_timeout: Duration = _doc(
        "How long a streaming URL stays valid unused, and how long a client may take to set up its streams.",
        default=Duration(30.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    address: str = _doc("host:port of the Prometheus metrics endpoint (\":9090\" = every interface); empty = "
                        "off.", default="")
    tls_cert: str = _doc("PEM certificate the metrics endpoint serves HTTPS with; empty = plain HTTP.",
                         default="")
    tls_key: str = _doc("PEM private key of tls_cert.", default="")
    tls_ca: str = _doc("PEM CA bundle; when set, scrapers must present a client certificate it signed.",
                       default="")
    container_metrics: bool = _doc(
        "Also expose cAdvisor's container_* families of every running pod and container at the endpoint.",
        default=True)
    max_age: Duration = _doc(
        "A pod's or container's reading (cgroup, network, writable layer) younger than this is reused by "
        "stats, CRI metrics, `crib top` and scrapes; \"0\" = read on every call.", default=Duration(1.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class NriConfig:
    """NRI (Node Resource Interface): plugins that see and adjust pods and containers, as in containerd 2."""

    enable: bool = _doc("Run NRI: plugins connecting to socket_path or started from plugin_path see every "
                        "pod and container and may adjust them. Costs nothing while no plugin is connected.",
                        default=True)
    socket_path: str = _doc("Unix socket external NRI plugins connect to.", default="/var/run/nri/nri.sock")
    plugin_path: str = _doc("Pre-installed plugins crib starts: executables named <two-digit index>-<name>.",
                            default="/opt/nri/plugins")
    plugin_config_path: str = _doc("Configuration of pre-installed plugins: <index>-<name>.conf or "
                                   "<name>.conf.", default="/etc/nri/conf.d")
    registration_timeout: Duration = _doc(
        "Bound on each step of a plugin joining (registration, configuration, synchronization).",
        default=Duration(5.0))
    request_timeout: Duration = _doc(
        "Bound on a plugin's answer to one event; a plugin that misses it is disconnected and the operation "
        "goes on without it.", default=Duration(2.0))
    disable_connections: bool = _doc(
        "Accept no external plugin connections (pre-installed plugins still run).", default=False)
    cdi_spec_dirs: list[str] = _doc("CDI spec directories for devices NRI plugins inject; a later one wins.",
                                    default_factory=lambda: ["/etc/cdi", "/var/run/cdi"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    root: str = _doc("Persistent data: images, layers, state database.", default="/var/lib/crib")
    runroot: str = _doc("Volatile state: sockets, pinned namespaces, runtime state.", default="/run/crib")
    listen: str = _doc("CRI endpoint (unix://PATH).", default="unix:///run/crib/crib.sock")
    log_level: str = _doc("debug, info, warning or error.", default="info")
    log_format: str = _doc("text or json.", default="text")
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    nri: NriConfig = field(default_factory=NriConfig)

    @property
    def socket_path(self) -> str:
        return self.listen.removeprefix("unix://")

    def handler_root(self, name: str) -> str:
        """The --root runc uses for a handler (its own, or one per handler under runroot)."""
        return self.runtime.handlers[name].root or f"{self.runroot}/{name}"


# ---------------------------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list of " + _type_name(typing.get_args(tp)[0]).split(" ", 1)[1] + "s"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", bool: "a boolean (true/false)", float: "a number",
            Duration: "a duration string like \"60s\""}.get(tp, str(tp))


def _check_value(tp: Any, value: Any, where: str, source: str) -> Any:
    """Validate one value against a schema type, returning its converted form."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{source}: {where} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad
        return _check_table(typing.cast(type, tp), value, where, source)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        _, vtype = typing.get_args(tp)
        return {k: _check_value(vtype, v, f"{where}.{k}", source) for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise bad
        return [_check_value(item, v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if tp is Duration:
        if not isinstance(value, str):
            raise bad
        try:
            return Duration.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {where}: {exc}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"config schema type {tp!r} is not supported")  # a bug in this module


def _check_table(cls: type, data: Mapping[str, Any], where: str, source: str) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            table = f"[{where}]" if where else "the top level"
            raise ConfigError(
                f"{source}: unknown key {path!r} in {table}; known keys: {', '.join(sorted(known))}")
        out[key] = _check_value(hints[key], value, path, source)
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    """Turn a validated (partial) mapping into the dataclass, defaults filling the gaps."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(typing.cast(type, tp), value)
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            vtype = typing.get_args(tp)[1]
            defaults = f.default_factory() if f.default_factory is not dataclasses.MISSING else {}
            table = {k: dataclasses.asdict(v) for k, v in defaults.items()}
            table = _merge(table, value)
            kwargs[f.name] = {k: _build(vtype, v) for k, v in table.items()}
        else:
            kwargs[f.name] = value
    return cls(**kwargs)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return _check_table(Config, raw, "", str(path))


def _validate(cfg: Config, sources: str) -> None:
    from crib import log  # local: log imports nothing of ours, but keep config import-light

    def fail(msg: str) -> typing.NoReturn:
        raise ConfigError(f"{msg} (configuration from {sources})")

    if cfg.log_level not in log.LEVELS:
        fail(f"log_level {cfg.log_level!r} must be one of {', '.join(log.LEVELS)}")
    if cfg.log_format not in log.FORMATS:
        fail(f"log_format {cfg.log_format!r} must be one of {', '.join(log.FORMATS)}")
    if not cfg.listen.startswith("unix:///"):
        fail(f"listen {cfg.listen!r} must be a unix socket URL such as unix:///run/crib/crib.sock")
    for key in ("root", "runroot"):
        if not getattr(cfg, key).startswith("/"):
            fail(f"{key} {getattr(cfg, key)!r} must be an absolute path")
    if cfg.runtime.cgroup_driver not in ("cgroupfs", "systemd"):
        fail(f"runtime.cgroup_driver {cfg.runtime.cgroup_driver!r} must be \"cgroupfs\" or "
             "\"systemd\"")
    if not cfg.runtime.default_cgroup_parent.startswith("/"):
        fail(f"runtime.default_cgroup_parent {cfg.runtime.default_cgroup_parent!r} must be an absolute "
             "cgroup path such as \"/crib\"")
    if cfg.runtime.shm_size < 4096:
        fail(f"runtime.shm_size {cfg.runtime.shm_size} must be at least 4096 bytes")
    if cfg.runtime.exec_output_max < 1:
        fail("runtime.exec_output_max must be positive")
    if 0 <= cfg.runtime.log_size_max < 8192:
        fail(f"runtime.log_size_max {cfg.runtime.log_size_max} must be -1 (unlimited) or at least 8192 "
             "(conmon's read buffer)")
    for name, handler in cfg.runtime.handlers.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
            fail(f"runtime.handlers.{name}: a handler name is 1 to 63 letters, digits, '_', '.' or '-'")
        if not handler.path.startswith("/"):
            fail(f"runtime.handlers.{name}.path {handler.path!r} must be an absolute path")
        for pattern in handler.allowed_annotations:
            if not pattern or "*" in pattern[:-1]:
                fail(f"runtime.handlers.{name}.allowed_annotations: {pattern!r} must be a key or a prefix "
                     "ending in \"*\"")
    if cfg.runtime.default_handler not in cfg.runtime.handlers:
        known = ", ".join(sorted(cfg.runtime.handlers))
        fail(f"runtime.default_handler {cfg.runtime.default_handler!r} has no [runtime.handlers."
             f"{cfg.runtime.default_handler}] table; known handlers: {known}")
    for subnet in cfg.network.default_subnet.split(","):
        try:
            ipaddress.ip_network(subnet.strip())
        except ValueError as exc:
            fail(f"network.default_subnet: {exc}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", cfg.network.default_bridge):
        fail(f"network.default_bridge {cfg.network.default_bridge!r} must be a Linux interface name: 1 to 15 "
             "letters, digits, '_', '.' or '-'")
    for extra in cfg.network.default_extra_plugins:
        if extra not in ("firewall", "tuning", "bandwidth"):
            fail(f"network.default_extra_plugins: {extra!r} is not one of \"firewall\", \"tuning\", "
                 "\"bandwidth\"")
    if cfg.network.plugin_timeout <= 0:
        fail("network.plugin_timeout must be more than 0")
    if cfg.image.max_concurrent_downloads < 1:
        fail(f"image.max_concurrent_downloads {cfg.image.max_concurrent_downloads} must be at least 1")
    if cfg.image.max_layer_bytes < 0:
        fail(f"image.max_layer_bytes {cfg.image.max_layer_bytes} must be 0 (no limit) or positive")
    if cfg.metrics.address:
        try:
            split_address(cfg.metrics.address)
        except ValueError as exc:
            fail(f"metrics.address: {exc}")
    if bool(cfg.metrics.tls_cert) != bool(cfg.metrics.tls_key):
        fail("metrics.tls_cert and metrics.tls_key must be set together")
    if cfg.metrics.tls_ca and not cfg.metrics.tls_cert:
        fail("metrics.tls_ca (client certificates) needs metrics.tls_cert and metrics.tls_key too")
    if cfg.metrics.max_age < 0:
        fail("metrics.max_age must be 0 or more")
    if not cfg.nri.socket_path.startswith("/"):
        fail(f"nri.socket_path {cfg.nri.socket_path!r} must be an absolute path")
    for key in ("registration_timeout", "request_timeout"):
        if getattr(cfg.nri, key) <= 0:
            fail(f"nri.{key} must be more than 0")
    if not 0 <= cfg.stream.port <= 65535:
        fail(f"stream.port {cfg.stream.port} must be between 0 and 65535")
    if bool(cfg.stream.tls_cert) != bool(cfg.stream.tls_key):
        fail("stream.tls_cert and stream.tls_key go together: set both (HTTPS) or neither (HTTP)")
    if cfg.stream.tls_ca and not cfg.stream.tls_cert:
        fail("stream.tls_ca needs stream.tls_cert and stream.tls_key: client certificates need TLS")
    if cfg.stream.creation_timeout <= 0:
        fail("stream.creation_timeout must be more than 0")


def split_address(address: str) -> tuple[str | None, int]:
    """(host, or None for every interface; port) of "host:port", "[v6]:port" or ":port".

    Raises:
        ValueError: not of that form, or the port is out of range.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} must be host:port, e.g. \"127.0.0.1:9090\" or \":9090\"")
    return (host.strip("[]") or None), int(port)


def load(
    config_file: str | None = None,
    config_dir: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective configuration.

    Args:
        config_file: the main file; when None the default path is used if it exists. A file named
            explicitly must exist.
        config_dir: drop-in directory read in lexical order after the main file (default /etc/crib/crib.d).
        overrides: values from command-line flags, as a nested mapping of the same shape as the files.

    Raises:
        ConfigError: a file is unreadable, not TOML, has an unknown key or a wrong type, or the merged
            result is inconsistent.
    """
    merged: dict[str, Any] = {}
    sources: list[str] = ["embedded defaults"]
    main = Path(config_file or DEFAULT_CONFIG_FILE)
    if main.exists():
        merged = _merge(merged, _read_file(main))
        sources.append(str(main))
    elif config_file is not None:
        raise ConfigError(f"config file {config_file} does not exist")
    drop_dir = Path(config_dir or DEFAULT_CONFIG_DIR)
    if drop_dir.is_dir():
        for path in sorted(drop_dir.glob("*.toml")):
            merged = _merge(merged, _read_file(path))
            sources.append(str(path))
    if overrides:
        merged = _merge(merged, _check_table(Config, overrides, "", "command line"))
        sources.append("command line")
    cfg: Config = _build(Config, merged)
    _validate(cfg, ", ".join(sources))
    return cfg


def default() -> Config:
    """The embedded defaults alone."""
    return Config()


# ---------------------------------------------------------------------------------------------- output


def to_dict(cfg: Any) -> Any:
    """The config as plain JSON-able data (durations as strings), for Status verbose info."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Duration):
        return str(cfg)
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Duration):
        return json.dumps(str(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_toml(cfg: Config) -> str:
    """The effective configuration as commented TOML that `load` reads back unchanged."""
    lines = ["# crib configuration: the effective values, with what each key does.",
             "# Files: /etc/crib/crib.toml, then /etc/crib/crib.d/*.toml in lexical order; flags win.", ""]

    def table(obj: Any, header: str) -> None:
        nested: list[tuple[str, Any]] = []
        if header:
            lines.append(f"[{header}]")
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            name = f"{header}.{f.name}" if header else f.name
            if dataclasses.is_dataclass(value):
                nested.append((name, value))
                continue
            if isinstance(value, dict):
                if f.metadata.get("doc"):
                    nested.append(("#" + f.metadata["doc"], None))
                nested.extend((f"{name}.{k}", v) for k, v in sorted(value.items()))
                continue
            if f.metadata.get("doc"):
                lines.append(f"# {f.metadata['doc']}")
            lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
        for name, value in nested:
            if value is None:
                lines.append(f"# {name[1:]}")
                continue
            table(value, name)

    table(cfg, "")
    return "\n".join(lines).rstrip() + "\n"


__all__ = [
    "DEFAULT_CONFIG_DIR",
    "DEFAULT_CONFIG_FILE",
    "Config",
    "Duration",
    "HandlerConfig",
    "ImageConfig",
    "MetricsConfig",
    "NetworkConfig",
    "NriConfig",
    "RuntimeConfig",
    "StreamConfig",
    "default",
    "load",
    "render_toml",
    "split_address",
    "to_dict",
]
