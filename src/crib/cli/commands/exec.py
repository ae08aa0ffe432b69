"""exec, attach and port-forward: commands in containers, their consoles, and pod ports on this host.

`exec -s` is ExecSync (stdout to stdout, stderr to stderr, the command's exit status as crib's). The
streaming forms ask the runtime for a URL (CRI Exec/Attach/PortForward) and speak SPDY (crictl's
default) or WebSocket to it through crib.streaming.client; a URL without scheme or host goes to
http://127.0.0.1:10250, as crictl does. https URLs (a runtime whose streaming server has TLS) take
crictl's --tls-ca/--tls-cert/--tls-key/--tls-sni; with -it, ctrl-p ctrl-q (--detach-keys) leaves the
session, as crictl's and docker's terminals do.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli.client import Client, ClientError
from crib.cli.commands._common import apply, client_of, label_option, list_containers, parse_labels

KUBELET_URL = "http://127.0.0.1:10250"

_TRANSPORT = [
    click.option("-r", "--transport", type=click.Choice(["spdy", "websocket"]), default="spdy",
                 show_default=True, help="Streaming protocol."),
    click.option("--tls-sni", "--tls-server-name", "tls_sni", default="localhost", show_default=True,
                 help="Name the streaming server's TLS certificate is checked against (https URLs)."),
    click.option("--tls-ca", default="", help="CA file verifying the streaming server (https URLs; without "
                 "--tls-ca, --tls-cert and --tls-key: no verification, as crictl)."),
    click.option("--tls-cert", default="", help="Client certificate, for a streaming server asking for one."),
    click.option("--tls-key", default="", help="Private key of --tls-cert."),
]
_DETACH = click.option("--detach-keys", default="ctrl-p,ctrl-q", show_default=True,
                       help="Keys leaving a -t session (comma-separated, a char or ctrl-<key>; '' for none).")


def full_url(url: str) -> str:
    """The streaming URL with crictl's fallback scheme and host."""
    if "://" in url:
        return url
    return KUBELET_URL.rstrip("/") + "/" + url.lstrip("/")


class Tls:
    """The --tls-* flags: checked before a URL is asked for, turned into an SSLContext for https URLs."""

    def __init__(self, flags: dict[str, Any]) -> None:
        self.ca, self.cert, self.key = flags["tls_ca"], flags["tls_cert"], flags["tls_key"]
        self.server_name: str = flags["tls_sni"] or "localhost"
        if bool(self.cert) != bool(self.key):
            raise click.UsageError("--tls-cert and --tls-key go together (a client certificate and its key)")

    def options(self, url: str) -> dict[str, Any]:
        """ssl_context and server_name for the streaming client (nothing for a plain http URL)."""
        if not url.startswith("https://"):
            return {}
        import ssl

        streaming = _streaming()
        try:
            context = streaming.tls_context(ca=self.ca, cert=self.cert, key=self.key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ClientError(f"streaming TLS: {exc}; check --tls-ca, --tls-cert and --tls-key") from None
        return {"ssl_context": context, "server_name": self.server_name}


def _detach_keys(spec: str) -> bytes:
    try:
        keys: bytes = _streaming().parse_detach_keys(spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--detach-keys") from None
    return keys


def _streaming() -> Any:
    try:
        return importlib.import_module("crib.streaming.client")
    except ImportError:
        raise ClientError("interactive exec, attach and port-forward need crib.streaming.client, which this "
                          "build of crib does not have yet; `crib exec -s` runs a command without a stream",
                          code="UNIMPLEMENTED") from None


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    """The local terminal in raw mode for a remote tty (keys go through as typed), restored afterwards."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSADRAIN)  # not setraw's default TCSAFLUSH: it would drop what was typed ahead
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _session(url: str, *, stdin: bool, tty: bool, transport: str, tls: Tls, detach_keys: bytes = b"",
             what: str = "") -> int:
    """One remote command session on this process's stdin/stdout/stderr; the command's exit code.

    With -t, the detach keys end the session from here (crictl's and docker's ctrl-p ctrl-q): exit
    status 0 and a note on stderr saying what became of the remote side.
    """
    streaming = _streaming()
    if tty and not sys.stdin.isatty():
        raise ClientError("-t needs a terminal on stdin (run without -t to pipe input)")
    options = tls.options(url)
    sys.stdout.flush()
    raw = _raw_terminal(0) if tty else contextlib.nullcontext()
    try:
        with raw:
            code: int = asyncio.run(streaming.run(
                url, stdin=0 if stdin else None, stdout=1, stderr=None if tty else 2, tty=tty,
                resize=streaming.terminal_sizes(0) if tty else None, transport=transport,
                detach_keys=detach_keys if tty and stdin else b"", **options))
    except streaming.Detached:
        click.echo(f"\ncrib: detached; {what}", err=True)
        return 0
    except (streaming.RemoteError, ConnectionError, TimeoutError, OSError) as exc:
        hint = "; check --tls-ca and --tls-sni" if "CERTIFICATE" in str(exc) else ""
        raise ClientError(f"streaming from {url}: {exc}{hint}") from None
    return code


def _exec_sync(client: Client, cid: str, cmd: list[str], timeout: int) -> int:
    request = api.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout)
    resp = client.call("ExecSync", request, timeout=client.timeout + timeout if timeout else None)
    sys.stdout.buffer.write(resp.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(resp.stderr)
    sys.stderr.flush()
    return int(resp.exit_code)


def _exec_stream(client: Client, cid: str, cmd: list[str], *, stdin: bool, tty: bool, transport: str,
                 tls: Tls, detach_keys: bytes) -> int:
    if tty and not stdin:
        raise click.UsageError("-t/--tty needs -i/--interactive, as in crictl")
    _streaming()  # before asking for a URL that would go unused
    resp = client.call("Exec", api.ExecRequest(container_id=cid, cmd=cmd, tty=tty, stdin=stdin, stdout=True,
                                               stderr=not tty))
    client.debug(f"exec URL: {resp.url}")
    return _session(full_url(resp.url), stdin=stdin, tty=tty, transport=transport, tls=tls,
                    detach_keys=detach_keys, what="the command ends with its session")


@click.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-s", "--sync", is_flag=True, help="Run the command synchronously (CRI ExecSync).")
@click.option("--timeout", type=int, default=0, help="Timeout in seconds (0: none).")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY (needs -i).")
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("--name", default="", help="Exec in every container whose name matches this regex.")
@click.option("-p", "--pod", default="", help="Exec in every container of this pod id.")
@click.option("--image", default="", help="Exec in every container of this image.")
@click.option("--state", default="", help="Exec in every container in this state.")
@label_option("Exec in every container with this key=value label.")
@click.option("-l", "--latest", is_flag=True, help="Exec in the most recently created container.")
@click.option("-n", "--last", type=int, default=0, help="Exec in the last n created containers.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print container IDs when several are selected.")
@click.option("-e", "--ignore-errors", is_flag=True, help="Exit 0 whatever the commands return.")
@click.option("-x", "--parallel", is_flag=True, hidden=True, help="Accepted; crib runs them one by one.")
@apply(_TRANSPORT)
@_DETACH
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="[CONTAINER-ID] COMMAND [ARG...]")
@click.pass_context
def exec_(ctx: click.Context, /, sync: bool, timeout: int, tty: bool, interactive: bool, name: str, pod: str,
          image: str, state: str, labels: tuple[str, ...], latest: bool, last: int, quiet: bool,
          ignore_errors: bool, parallel: bool, transport: str, detach_keys: str, args: tuple[str, ...],
          **tls_flags: Any) -> None:
    """Run a command in a running container (the container id is not given when filter flags select)."""
    tls = Tls(tls_flags)
    keys = b"" if sync else _detach_keys(detach_keys)
    client = client_of(ctx)
    filtered = bool(name or pod or image or state or labels or latest or last)
    if filtered:
        ids = [c.id for c in list_containers(client, name=name, pod=pod, image=image, state=state,
                                             labels=parse_labels(labels), latest=latest, last=last)]
        if not ids:
            raise ClientError("no containers match the filter flags")
        cmd = list(args)
    else:
        if len(args) < 2:
            raise click.UsageError("give a CONTAINER-ID and a COMMAND")
        ids, cmd = [args[0]], list(args[1:])
    status = 0
    for cid in ids:
        if filtered and not quiet and len(ids) > 1:
            click.echo(f"{cid}:")
        try:
            code = _exec_sync(client, cid, cmd, timeout) if sync else _exec_stream(
                client, cid, cmd, stdin=interactive, tty=tty, transport=transport, tls=tls, detach_keys=keys)
        except ClientError as exc:
            if not ignore_errors:
                raise
            click.echo(f"crib: {cid}: {exc}", err=True)
            code = 0
        status = status or code
    sys.exit(0 if ignore_errors else status)


@click.command()
@click.argument("container_id", metavar="CONTAINER-ID")
@click.option("-t", "--tty", is_flag=True, help="Stdin is a TTY.")
@click.option("-i", "--stdin", is_flag=True, help="Pass stdin to the container.")
@apply(_TRANSPORT)
@_DETACH
@click.pass_context
def attach(ctx: click.Context, /, container_id: str, tty: bool, stdin: bool, transport: str, detach_keys: str,
           **tls_flags: Any) -> None:
    """Attach to a running container's console (with -it, the detach keys leave it running)."""
    tls = Tls(tls_flags)
    keys = _detach_keys(detach_keys)
    client = client_of(ctx)
    request = api.AttachRequest(container_id=container_id, tty=tty, stdin=stdin, stdout=True, stderr=not tty)
    resp = client.call("Attach", request)
    client.debug(f"attach URL: {resp.url}")
    sys.exit(_session(full_url(resp.url), stdin=stdin, tty=tty, transport=transport, tls=tls,
                      detach_keys=keys, what="the container keeps running"))


@click.command("port-forward")
@click.argument("pod_id", metavar="POD-ID")
@click.argument("ports", nargs=-1, required=True, metavar="[LOCAL_PORT:]REMOTE_PORT...")
@apply(_TRANSPORT)
@click.pass_context
def port_forward(ctx: click.Context, /, pod_id: str, ports: tuple[str, ...], transport: str,
                 **tls_flags: Any) -> None:
    """Forward local ports (on 127.0.0.1) to ports inside a pod, until Ctrl-C."""
    tls = Tls(tls_flags)
    pairs = []
    for spec in ports:
        local, _, remote = spec.rpartition(":")
        try:
            pairs.append((int(local or remote), int(remote)))
        except ValueError:
            raise click.BadParameter(f"{spec!r}: use REMOTE or LOCAL:REMOTE port numbers") from None
    client = client_of(ctx)
    streaming = _streaming()
    resp = client.call("PortForward", api.PortForwardRequest(pod_sandbox_id=pod_id,
                                                             port=[r for _, r in pairs]))
    client.debug(f"port-forward URL: {resp.url}")

    def ready(bound: list[tuple[int, int]]) -> None:
        for local, remote in bound:
            click.echo(f"Forwarding from 127.0.0.1:{local} -> {remote}")

    url = full_url(resp.url)
    try:
        asyncio.run(streaming.forward(url, pairs, transport=transport, ready=ready, **tls.options(url)))
    except KeyboardInterrupt:
        return
    except (streaming.RemoteError, ConnectionError, TimeoutError, OSError) as exc:
        raise ClientError(f"port-forward to {resp.url}: {exc}") from None


__all__ = ["attach", "exec_", "full_url", "port_forward"]
