"""exec (-i, -it, both transports), attach and port-forward through the CLI against a real daemon; the
detach keys; a daemon streaming over TLS with client certificates (crictl's --tls-* flags)."""

from __future__ import annotations

import fcntl
import shutil
import struct
import subprocess
import sys
import termios
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.fixtures import images as img
from tests.fixtures.cri import wait_for
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.registry import free_port
from tests.integration.cli_helpers import Cli, container_json, pod_yaml, with_busybox
from tests.integration.test_cli_pty import Terminal


def _start(cli: Cli, tmp_path: Path, pod: str, pod_file: Path, ref: str, name: str,
           command: list[str]) -> str:
    cid = cli.ok("create", pod, str(container_json(tmp_path, name, ref, command)), str(pod_file)).strip()
    cli.ok("start", cid)
    return cid


def test_exec_it_runs_an_interactive_shell(crib: CribDaemon, images: img.Catalogue, tmp_path: Path,
                                           session_tag: str) -> None:
    ref = images.reference(img.BUSYBOX)
    cli = with_busybox(crib.endpoint, ref)
    cid = cli.ok("run", "--no-pull", str(container_json(tmp_path, "shell", ref, ["sleep", "600"])),
                 str(pod_yaml(tmp_path, session_tag, "shell"))).strip()
    term = Terminal(crib.endpoint, "exec", "-it", cid, "sh")
    try:
        fcntl.ioctl(term.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        term.read_until(r"# $")  # busybox sh's prompt: there is a terminal on the other side
        term.send(b"echo hi-$((40 + 2)); tty\r")
        term.read_until(r"hi-42\s+/dev/pts/\d+")
        term.send(b"stty size\r")
        term.read_until(r"40 120")  # the local terminal's size reached the remote one
        term.send(b"exit 3\r")
        assert term.wait(20) == 3
    finally:
        term.close()
        cli.ok("rmp", "-f", "-a")


def test_exec_attach_and_port_forward(crib: CribDaemon, images: img.Catalogue, tmp_path: Path,
                                      session_tag: str) -> None:
    ref = images.reference(img.BUSYBOX)
    cli = with_busybox(crib.endpoint, ref)
    pod_file = pod_yaml(tmp_path, session_tag, "streams")
    pod = cli.ok("runp", str(pod_file)).strip()
    try:
        shell = _start(cli, tmp_path, pod, pod_file, ref, "shell", ["sleep", "600"])
        for transport in ("spdy", "websocket"):
            upper = cli.run("exec", "-i", "--transport", transport, shell, "tr", "a-z", "A-Z",
                            stdin="hello\n")
            assert (upper.returncode, upper.stdout) == (0, "HELLO\n"), upper.stderr
            failed = cli.run("exec", "-r", transport, shell, "sh", "-c", "echo out; echo err >&2; exit 5")
            assert (failed.returncode, failed.stdout, failed.stderr) == (5, "out\n", "err\n")

        ticker = _start(cli, tmp_path, pod, pod_file, ref, "ticker",
                        ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"])
        attach = subprocess.Popen([sys.executable, "-m", "crib", "-r", crib.endpoint, "attach", ticker],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert attach.stdout is not None
            first = attach.stdout.readline()
            assert first.startswith("tick "), first + (attach.stderr.read() if attach.stderr else "")
            assert int(attach.stdout.readline().split()[1]) == int(first.split()[1]) + 1
        finally:
            attach.terminate()
            attach.wait(10)

        _start(cli, tmp_path, pod, pod_file, ref, "web",
               ["sh", "-c", "mkdir -p /www && echo forwarded > /www/index.html && "
                "exec httpd -f -p 8080 -h /www"])
        local = free_port()
        argv = [sys.executable, "-m", "crib", "-r", crib.endpoint, "port-forward", pod, f"{local}:8080"]
        forward = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()
            assert line.strip() == f"Forwarding from 127.0.0.1:{local} -> 8080", line

            def fetch() -> str:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=5) as resp:
                        return str(resp.read().decode())
                except OSError:
                    return ""

            assert wait_for(fetch, timeout=20, what="the page through port-forward") == "forwarded\n"
        finally:
            forward.terminate()
            forward.wait(10)
    finally:
        cli.ok("rmp", "-f", pod)


def _forwarded_page(cli: Cli, pod: str, *flags: str) -> str:
    """`crib port-forward POD LOCAL:8080 FLAGS` and the page fetched through it (stopped afterwards)."""
    local = free_port()
    argv = [sys.executable, "-m", "crib", "-r", cli.endpoint, "port-forward", *flags, pod, f"{local}:8080"]
    forward = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert forward.stdout is not None
        assert forward.stderr is not None
        line = forward.stdout.readline()
        assert line.strip() == f"Forwarding from 127.0.0.1:{local} -> 8080", line + forward.stderr.read()

        def fetch() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=5) as resp:
                    return str(resp.read().decode())
            except OSError:
                return ""

        return str(wait_for(fetch, timeout=20, what="the page through port-forward"))
    finally:
        forward.terminate()
        forward.wait(10)


def test_detach_keys_leave_attach_and_exec(crib: CribDaemon, images: img.Catalogue, tmp_path: Path,
                                           session_tag: str) -> None:
    ref = images.reference(img.BUSYBOX)
    cli = with_busybox(crib.endpoint, ref)
    pod_file = pod_yaml(tmp_path, session_tag, "detach")
    pod = cli.ok("runp", str(pod_file)).strip()
    try:
        console = cli.ok("create", pod, str(container_json(tmp_path, "console", ref, ["sh"], tty=True,
                                                           stdin=True)), str(pod_file)).strip()
        cli.ok("start", console)
        term = Terminal(crib.endpoint, "attach", "-it", console)
        try:
            fcntl.ioctl(term.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            term.send(b"echo attached-$((20 + 1))\r")
            term.read_until(r"attached-21")
            term.send(b"\x10\x11")  # ctrl-p ctrl-q, crictl's and docker's keys
            assert term.wait(20) == 0
            assert "crib: detached; the container keeps running" in term.text
        finally:
            term.close()
        assert cli.json("inspect", console)["status"]["state"] == "CONTAINER_RUNNING"  # sh did not get EOF

        # exec -it with keys of one's own; ctrl-p alone is a key like any other there.
        term = Terminal(crib.endpoint, "exec", "-it", "--detach-keys", "ctrl-a,x", console, "sh")
        try:
            fcntl.ioctl(term.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            term.read_until(r"# $")
            term.send(b"echo \x10one-$((1 + 1))\r")
            term.read_until(r"one-2")
            term.send(b"\x01x")
            assert term.wait(20) == 0
            assert "crib: detached; the command ends with its session" in term.text
        finally:
            term.close()
        bad = cli.run("attach", "--detach-keys", "alt-q", console)
        assert bad.returncode == 2, bad.stderr
        assert "--detach-keys" in bad.stderr
    finally:
        cli.ok("rmp", "-f", pod)


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)


def _pki(directory: Path) -> dict[str, str]:
    """Two CAs; a server certificate of the first for localhost and 127.0.0.1; a client one of each CA."""
    for ca in ("ca", "other-ca"):
        _openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out",
                 f"{ca}.crt", "-days", "2", "-subj", f"/CN=crib-test-{ca}")
    for name, ca, ext in (("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
                          ("client", "ca", "extendedKeyUsage=clientAuth"),
                          ("other-client", "other-ca", "extendedKeyUsage=clientAuth")):
        _openssl(directory, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}")
        (directory / f"{name}.ext").write_text(ext + "\n")
        _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return {p.name: str(p) for p in directory.iterdir()}


def test_streaming_over_tls_with_client_certificates(crib_factory: Callable[..., CribDaemon],
                                                     images: img.Catalogue, tmp_path: Path,
                                                     session_tag: str) -> None:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    pki = _pki(pki_dir)
    daemon = crib_factory({"stream": {"tls_cert": pki["server.crt"], "tls_key": pki["server.key"],
                                      "tls_ca": pki["ca.crt"]}})
    ref = images.reference(img.BUSYBOX)
    cli = with_busybox(daemon.endpoint, ref)
    pod_file = pod_yaml(tmp_path, session_tag, "tls")
    pod = cli.ok("runp", str(pod_file)).strip()
    flags = ["--tls-ca", pki["ca.crt"], "--tls-cert", pki["client.crt"], "--tls-key", pki["client.key"]]
    try:
        shell = _start(cli, tmp_path, pod, pod_file, ref, "shell", ["sleep", "600"])
        for transport in ("spdy", "websocket"):
            upper = cli.run("exec", "-i", "--transport", transport, *flags, shell, "tr", "a-z", "A-Z",
                            stdin="secure\n")
            assert (upper.returncode, upper.stdout) == (0, "SECURE\n"), upper.stderr
        debug = cli.run("-D", "exec", *flags, shell, "true")
        assert debug.returncode == 0, debug.stderr
        assert "exec URL: https://" in debug.stderr  # the runtime hands out https URLs

        refused = {
            "no client certificate": ["--tls-ca", pki["ca.crt"]],
            "a client certificate of another CA": ["--tls-ca", pki["ca.crt"],
                                                   "--tls-cert", pki["other-client.crt"],
                                                   "--tls-key", pki["other-client.key"]],
            "a server checked against another CA": ["--tls-ca", pki["other-ca.crt"], "--tls-cert",
                                                    pki["client.crt"], "--tls-key", pki["client.key"]],
            "a server checked against another name": [*flags, "--tls-sni", "other.example"],
        }
        for case, bad in refused.items():
            out = cli.run("exec", *bad, shell, "echo", "leaked")
            assert out.returncode == 1, (case, out.stdout, out.stderr)
            assert out.stdout == "", (case, out.stdout)
            assert "Traceback" not in out.stderr, (case, out.stderr)
            assert out.stderr.startswith("crib: streaming from https://"), (case, out.stderr)
        assert "check --tls-ca and --tls-sni" in out.stderr
        usage = cli.run("exec", "--tls-cert", pki["client.crt"], shell, "true")
        assert usage.returncode == 2, usage.stderr
        assert "--tls-cert and --tls-key go together" in usage.stderr

        ticker = _start(cli, tmp_path, pod, pod_file, ref, "ticker",
                        ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"])
        argv = [sys.executable, "-m", "crib", "-r", daemon.endpoint, "attach", *flags, ticker]
        attach = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert attach.stdout is not None
            first = attach.stdout.readline()
            assert first.startswith("tick "), first + (attach.stderr.read() if attach.stderr else "")
        finally:
            attach.terminate()
            attach.wait(10)

        _start(cli, tmp_path, pod, pod_file, ref, "web",
               ["sh", "-c", "mkdir -p /www && echo over-tls > /www/index.html && "
                "exec httpd -f -p 8080 -h /www"])
        assert _forwarded_page(cli, pod, *flags) == "over-tls\n"

        crictl = shutil.which("crictl")
        if crictl is not None:  # the same flags mean the same to crictl (client-go's TLS, crib's server)
            argv = [crictl, "-r", daemon.endpoint, "--timeout", "30s", "exec", *flags, shell,
                    "echo", "from-crictl"]
            ran = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            assert (ran.returncode, ran.stdout) == (0, "from-crictl\n"), ran.stderr
    finally:
        cli.ok("rmp", "-f", pod)
