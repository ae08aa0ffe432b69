"""exec, attach and port-forward: commands in containers, their consoles, and pod ports on this host.

`exec -s` is ExecSync (stdout to stdout, stderr to stderr, the command's exit status as crib's). The
streaming forms ask the runtime for a URL (CRI Exec/Attach/PortForward) and speak SPDY (crictl's
default) or WebSocket to it through crib.streaming.client; a URL without scheme or host goes to
http://127.0.0.1:10250, as crictl does.
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
    click.option("--tls-sni", "--tls-server-name", "tls_sni", default="localhost", hidden=True,
                 help="Server name for TLS streaming (crictl compatibility)."),
    click.option("--tls-ca", default=None, hidden=True, help="CA for TLS streaming."),
    click.option("--tls-cert", default=None, hidden=True, help="Client certificate for TLS streaming."),
    click.option("--tls-key", default=None, hidden=True, help="Client key for TLS streaming."),
]


def full_url(url: str) -> str:
    """The streaming URL with crictl's fallback scheme and host."""
    if "://" in url:
        return url
    return KUBELET_URL.rstrip("/") + "/" + url.lstrip("/")


def _tls_refused(tls: dict[str, Any]) -> None:
    if tls.get("tls_ca") or tls.get("tls_cert") or tls.get("tls_key"):
        raise ClientError("TLS streaming is not supported by crib's client; crib serves streams over plain "
                          "HTTP on the node")


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
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _session(url: str, *, stdin: bool, tty: bool, transport: str) -> int:
    """One remote command session on this process's stdin/stdout/stderr; the command's exit code."""
    streaming = _streaming()
    if tty and not sys.stdin.isatty():
        raise ClientError("-t needs a terminal on stdin (run without -t to pipe input)")
    sys.stdout.flush()
    raw = _raw_terminal(0) if tty else contextlib.nullcontext()
    try:
        with raw:
            code: int = asyncio.run(streaming.run(
                url, stdin=0 if stdin else None, stdout=1, stderr=None if tty else 2, tty=tty,
                resize=streaming.terminal_sizes(0) if tty else None, transport=transport))
    except (streaming.RemoteError, ConnectionError, TimeoutError, OSError) as exc:
        raise ClientError(f"streaming from {url}: {exc}") from None
    return code


def _exec_sync(client: Client, cid: str, cmd: list[str], timeout: int) -> int:
    request = api.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout)
    resp = client.call("ExecSync", request, timeout=client.timeout + timeout if timeout else None)
    sys.stdout.buffer.write(resp.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(resp.stderr)
    sys.stderr.flush()
    return int(resp.exit_code)


def _exec_stream(client: Client, cid: str, cmd: list[str], *, stdin: bool, tty: bool, transport: str) -> int:
    if tty and not stdin:
        raise click.UsageError("-t/--tty needs -i/--interactive, as in crictl")
    _streaming()  # before asking for a URL that would go unused
    resp = client.call("Exec", api.ExecRequest(container_id=cid, cmd=cmd, tty=tty, stdin=stdin, stdout=True,
                                               stderr=not tty))
    client.debug(f"exec URL: {resp.url}")
    return _session(full_url(resp.url), stdin=stdin, tty=tty, transport=transport)


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
@click.argument("args", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="[CONTAINER-ID] COMMAND [ARG...]")
@click.pass_context
def exec_(ctx: click.Context, /, sync: bool, timeout: int, tty: bool, interactive: bool, name: str, pod: str,
          image: str, state: str, labels: tuple[str, ...], latest: bool, last: int, quiet: bool,
          ignore_errors: bool, parallel: bool, transport: str, args: tuple[str, ...], **tls: Any) -> None:
    """Run a command in a running container (the container id is not given when filter flags select)."""
    _tls_refused(tls)
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
                client, cid, cmd, stdin=interactive, tty=tty, transport=transport)
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
@click.pass_context
def attach(ctx: click.Context, /, container_id: str, tty: bool, stdin: bool, transport: str,
           **tls: Any) -> None:
    """Attach to a running container's console."""
    _tls_refused(tls)
    client = client_of(ctx)
    _streaming()
    request = api.AttachRequest(container_id=container_id, tty=tty, stdin=stdin, stdout=True, stderr=not tty)
    resp = client.call("Attach", request)
    client.debug(f"attach URL: {resp.url}")
    sys.exit(_session(full_url(resp.url), stdin=stdin, tty=tty, transport=transport))


@click.command("port-forward")
@click.argument("pod_id", metavar="POD-ID")
@click.argument("ports", nargs=-1, required=True, metavar="[LOCAL_PORT:]REMOTE_PORT...")
@apply(_TRANSPORT)
@click.pass_context
def port_forward(ctx: click.Context, /, pod_id: str, ports: tuple[str, ...], transport: str,
                 **tls: Any) -> None:
    """Forward local ports (on 127.0.0.1) to ports inside a pod, until Ctrl-C."""
    _tls_refused(tls)
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

    try:
        asyncio.run(streaming.forward(full_url(resp.url), pairs, transport=transport, ready=ready))
    except KeyboardInterrupt:
        return
    except (streaming.RemoteError, ConnectionError, TimeoutError, OSError) as exc:
        raise ClientError(f"port-forward to {resp.url}: {exc}") from None


__all__ = ["attach", "exec_", "full_url", "port_forward"]
