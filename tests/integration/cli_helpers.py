"""Running `crib` as a user does (a subprocess) and reading its -o json / -o yaml output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml


def crib_cli(*args: str, endpoint: str | None = None, env: dict[str, str] | None = None,
             timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m crib [-r endpoint] args...` with no endpoint or crictl config leaking in from the host."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("CONTAINER_RUNTIME_ENDPOINT", "IMAGE_SERVICE_ENDPOINT", "CRI_CONFIG_FILE")}
    full_env.update(env or {})
    argv = [sys.executable, "-m", "crib", *(["-r", endpoint] if endpoint else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env, check=False,
                          input=stdin)


class Cli:
    """crib_cli bound to one daemon; ok() asserts success, json()/yaml() parse the output."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return crib_cli(*args, endpoint=self.endpoint, **kw)

    def ok(self, *args: str, **kw: Any) -> str:
        out = self.run(*args, **kw)
        assert out.returncode == 0, f"crib {' '.join(args)} failed ({out.returncode}):\n{out.stderr}"
        return out.stdout

    def fails(self, *args: str, code: int = 1) -> str:
        out = self.run(*args)
        assert out.returncode == code, f"crib {' '.join(args)}: {out.returncode}\n{out.stdout}{out.stderr}"
        assert "Traceback" not in out.stderr, out.stderr
        return out.stderr

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))

    def yaml(self, *args: str) -> Any:
        return yaml.safe_load(self.ok(*args, "-o", "yaml"))


def with_busybox(endpoint: str, reference: str) -> Cli:
    """A Cli on the daemon at endpoint, with the image pulled (quietly) through the CLI."""
    cli = Cli(endpoint)
    cli.ok("pull", "-q", reference)
    return cli


def pod_yaml(directory: Path, tag: str, name: str = "", *, labels: dict[str, str] | None = None,
             namespace: str = "crib-test") -> Path:
    """A pod config in YAML, snake_case, with a cgroup parent the leak check recognises."""
    name = name or f"pod-{uuid.uuid4().hex[:6]}"
    doc = {"metadata": {"name": name, "namespace": namespace, "uid": uuid.uuid4().hex},
           "log_directory": str(directory / f"logs-{name}"), "labels": labels or {"app": name},
           "linux": {"cgroup_parent": f"/{tag}/{name}",
                     "security_context": {"namespace_options": {"pid": 1}}}}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def container_json(directory: Path, name: str, image: str, command: list[str], **extra: Any) -> Path:
    """A container config in JSON, snake_case, envs as plain strings (crictl's files)."""
    doc = {"metadata": {"name": name}, "image": {"image": image}, "command": command,
           "log_path": f"{name}/0.log", "linux": {"security_context": {"namespace_options": {"pid": 1}}},
           **extra}
    path = directory / f"{name}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(doc))
    return path
