"""A CRI client for the command line, usable against any runtime (crib, containerd, CRI-O).

Settings are resolved the way crictl resolves them, so a node's existing /etc/crictl.yaml works unchanged:
each of runtime endpoint, image endpoint, timeout and debug comes from its flag, then (endpoints only) its
environment variable (`CONTAINER_RUNTIME_ENDPOINT`, `IMAGE_SERVICE_ENDPOINT`), then the client config file
(`-c/--config`, `$CRI_CONFIG_FILE`, else /etc/crictl.yaml), then crib's default (the image endpoint
defaults to the runtime's). crictl would then probe containerd's and CRI-O's sockets; crib uses its own.

Start-up time matters (people run `crib ps -q` in loops): unary calls go over crib's small HTTP/2 client
(h2unary) and grpc is imported only by streaming commands; a crictl.yaml of plain `key: value` lines is
read without importing yaml. A unix socket that
does not exist is reported at once, with a hint, instead of after the timeout.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crib.cli.errors import CliError
from crib.cli.timeparse import BadTime, parse_duration

DEFAULT_ENDPOINT = "unix:///run/crib/crib.sock"
CRICTL_CONFIG = "/etc/crictl.yaml"
ENV_ENDPOINT = "CONTAINER_RUNTIME_ENDPOINT"
ENV_IMAGE_ENDPOINT = "IMAGE_SERVICE_ENDPOINT"
ENV_CONFIG = "CRI_CONFIG_FILE"
DEFAULT_TIMEOUT = 10.0
DAEMON_HINT = "is the daemon running? `make run` starts it"

RUNTIME_SERVICE = "runtime.v1.RuntimeService"
IMAGE_SERVICE = "runtime.v1.ImageService"

# crictl.yaml keys (pkg/common/config.go) and their types.
CONFIG_KEYS: dict[str, type] = {
    "runtime-endpoint": str, "image-endpoint": str, "timeout": int, "debug": bool,
    "pull-image-on-create": bool, "disable-pull-on-run": bool, "max-retries": int,
}


class ClientError(CliError):
    """A CRI call (or its set-up) failed; str() is the one line the user sees."""

    def __init__(self, message: str, *, code: str = "", hint: str = "") -> None:
        self.code = code
        self.message = message
        self.hint = hint
        text = f"{code}: {message}" if code else message
        super().__init__(f"{text}; {hint}" if hint else text)


def normalize(endpoint: str) -> str:
    """Accept unix://PATH or a bare socket path, as crictl does."""
    if endpoint.startswith("unix://"):
        return endpoint
    if "://" in endpoint:
        raise ClientError(f"endpoint {endpoint!r}: only unix:// sockets are supported")
    return "unix://" + endpoint


# ----------------------------------------------------------------------------------- client config file

_PLAIN_LINE = re.compile(r"""^([A-Za-z][\w-]*)\s*:\s*"""  # key:
                         r"""(?:"([^"]*)"|'([^']*)'|([^#'"\[\]{}&*!|>]*?))"""  # "value", 'value' or value
                         r"""\s*(?:#.*)?$""")  # comment


def _parse_plain(text: str) -> dict[str, str] | None:
    """`key: value` lines (what `crictl config --set` writes); None when the file needs real YAML."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped == "---":
            continue
        m = _PLAIN_LINE.match(line)
        if m is None or line[0].isspace():
            return None
        value = next(g for g in m.groups()[1:] if g is not None)
        out[m.group(1)] = value
    return out


def _scalar(key: str, value: Any, path: str) -> Any:
    kind = CONFIG_KEYS[key]
    text = "" if value is None else str(value).strip()
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "t"):
            return True
        if lowered in ("false", "0", "f", ""):
            return False
        raise ClientError(f"{path}: parsing config option '{key}': {text!r} is not true or false")
    if kind is int:
        try:
            return int(text or 0)
        except ValueError:
            raise ClientError(f"{path}: parsing config option '{key}': {text!r} is not a whole "
                              "number") from None
    return text


def read_client_config(path: str) -> dict[str, Any]:
    """The options of a crictl.yaml, typed; {} when the file does not exist.

    Raises:
        ClientError: unreadable, not a mapping, an unknown key (crictl refuses those too), a bad value.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
    raw: Any = _parse_plain(text)
    if raw is None:
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ClientError(f"cannot read {path}: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ClientError(f"cannot read {path}: expected `key: value` lines")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in CONFIG_KEYS:
            raise ClientError(f"{path}: config option {key!r} is not valid; valid options: "
                              + ", ".join(CONFIG_KEYS))
        out[key] = _scalar(key, value, path)
    return out


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoints:
    runtime: str
    image: str
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What one invocation of `crib` connects to and how."""

    endpoints: Endpoints
    timeout: float = DEFAULT_TIMEOUT
    debug: bool = False
    pull_image_on_create: bool = False
    disable_pull_on_run: bool = False
    config_path: str = CRICTL_CONFIG
    file: dict[str, Any] = field(default_factory=dict)


def config_path(flag: str | None) -> str:
    return flag or os.environ.get(ENV_CONFIG) or CRICTL_CONFIG


def resolve(runtime_flag: str | None, image_flag: str | None = None, crictl_config: str = CRICTL_CONFIG,
            *, timeout_flag: str | None = None, debug_flag: bool | None = None) -> Settings:
    """Settings from flags, environment, the client config file and defaults (see the module note).

    Raises:
        ClientError: a broken config file, a bad endpoint or timeout.
    """
    conf = read_client_config(crictl_config)
    if runtime_flag:
        runtime, source = runtime_flag, "--runtime-endpoint"
    elif os.environ.get(ENV_ENDPOINT):
        runtime, source = os.environ[ENV_ENDPOINT], f"${ENV_ENDPOINT}"
    elif conf.get("runtime-endpoint"):
        runtime, source = str(conf["runtime-endpoint"]), crictl_config
    else:
        runtime, source = DEFAULT_ENDPOINT, "crib's default"
    image = image_flag or os.environ.get(ENV_IMAGE_ENDPOINT) or conf.get("image-endpoint") or runtime
    timeout = DEFAULT_TIMEOUT
    if timeout_flag is not None:
        try:
            timeout = parse_duration(timeout_flag)
        except BadTime as exc:
            raise ClientError(f"--timeout: {exc}") from None
        if timeout <= 0:
            timeout = DEFAULT_TIMEOUT  # crictl: "0 or less is set to default"
    elif conf.get("timeout", 0) > 0:
        timeout = float(conf["timeout"])
    debug = debug_flag if debug_flag else bool(conf.get("debug", False))
    return Settings(endpoints=Endpoints(runtime=normalize(runtime), image=normalize(str(image)),
                                        source=source),
                    timeout=timeout, debug=debug, config_path=crictl_config, file=conf,
                    pull_image_on_create=bool(conf.get("pull-image-on-create", False)),
                    disable_pull_on_run=bool(conf.get("disable-pull-on-run", False)))


# -------------------------------------------------------------------------------------------- client


def _short(msg: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(msg, as_one_line=True)


class Client:
    """CRI calls with readable errors: unary ones over crib's own HTTP/2 client (h2unary), streaming ones and
    crib's extension calls over grpc (imported only then)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoints = settings.endpoints
        self.timeout = settings.timeout
        self._channels: dict[str, Any] = {}
        self._connections: dict[str, Any] = {}

    def _socket(self, endpoint: str) -> str:
        path = endpoint.removeprefix("unix://")
        if not os.path.exists(path):
            raise ClientError(
                f"cannot reach the runtime at {endpoint} (from {self.endpoints.source}): no socket at {path}",
                code="UNAVAILABLE", hint=f"{DAEMON_HINT}, or choose another with -r")
        return path

    def channel(self, endpoint: str) -> Any:
        """The grpc channel to endpoint (made on first use, after checking the socket exists)."""
        ch = self._channels.get(endpoint)
        if ch is None:
            self._socket(endpoint)
            import grpc

            opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            ch = self._channels[endpoint] = grpc.insecure_channel(endpoint, options=opts)
            self.debug(f"grpc channel to {endpoint} (from {self.endpoints.source})")
        return ch

    def _connection(self, endpoint: str) -> Any:
        conn = self._connections.get(endpoint)
        if conn is None:
            from crib.cli.h2unary import Connection

            conn = self._connections[endpoint] = Connection(self._socket(endpoint))
            self.debug(f"connected to {endpoint} (from {self.endpoints.source}), timeout {self.timeout:g}s")
        return conn

    def debug(self, text: str) -> None:
        if self.settings.debug:
            sys.stderr.write(f"DEBU {text}\n")

    def _method(self, service: str, name: str) -> Any:
        """The response message class of service/name."""
        from crib._proto.runtime.v1 import api_pb2 as api

        method = api.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]].methods_by_name[name]
        return getattr(api, method.output_type.name)

    def call(self, name: str, request: Any, *, timeout: float | None = -1.0, image: bool = False) -> Any:
        """One unary RPC by method name; timeout -1 means the configured one, None means no deadline.

        Raises:
            ClientError: the call failed (code and the runtime's message).
        """
        from crib.cli.h2unary import CallError

        service = IMAGE_SERVICE if image else RUNTIME_SERVICE
        response_type = self._method(service, name)
        conn = self._connection(self.endpoints.image if image else self.endpoints.runtime)
        self.debug(f"{name}Request: {_short(request)}")
        deadline = self.timeout if timeout == -1.0 else timeout
        try:
            data = conn.call(f"/{service}/{name}", request.SerializeToString(), deadline)
        except CallError as exc:
            raise self._failure(exc.code, exc.message, deadline) from None
        except OSError as exc:
            raise self._failure("UNAVAILABLE", exc.strerror or str(exc), deadline) from None
        response = response_type.FromString(data)
        self.debug(f"{name}Response: {_short(response)}")
        return response

    def stream(self, name: str, request: Any) -> Iterator[Any]:
        """A server-streaming RPC (GetContainerEvents), over grpc, without deadline; errors as ClientError."""
        channel = self.channel(self.endpoints.runtime)
        response_type = self._method(RUNTIME_SERVICE, name)
        rpc = channel.unary_stream(f"/{RUNTIME_SERVICE}/{name}",
                                   request_serializer=type(request).SerializeToString,
                                   response_deserializer=response_type.FromString)
        self.debug(f"{name}Request: {_short(request)}")
        try:
            yield from rpc(request)
        except Exception as exc:
            raise self.error(exc, None) from None

    def error(self, exc: BaseException, deadline: float | None) -> BaseException:
        """A grpc.RpcError as a ClientError; anything else unchanged."""
        import grpc

        if not isinstance(exc, grpc.RpcError):
            return exc
        return self._failure(exc.code().name, exc.details() or "", deadline)

    def _failure(self, code: str, detail: str, deadline: float | None) -> ClientError:
        if code == "UNAVAILABLE":
            return ClientError(f"cannot reach the runtime at {self.endpoints.runtime} (from "
                               f"{self.endpoints.source}): {detail}", code=code, hint=DAEMON_HINT)
        if code == "DEADLINE_EXCEEDED" and deadline is not None:
            return ClientError(f"no answer within {deadline:g}s ({detail}); raise it with --timeout",
                               code=code)
        return ClientError(detail, code=code)

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


__all__ = ["CONFIG_KEYS", "DEFAULT_ENDPOINT", "Client", "ClientError", "Endpoints", "Settings", "config_path",
           "normalize", "read_client_config", "resolve"]
