"""The README's blog walkthrough, step by step with `crib` commands, on a real daemon and pod network.

The example files are read from examples/; only what must differ per run is changed: the log directory,
the hostPort (a free one) and a cgroup parent the leak check recognises. (The busybox walkthrough's files
are run by test_examples.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.cni import Testbed
from tests.fixtures.cri import wait_for
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.registry import free_port
from tests.integration.cli_helpers import Cli
from tests.integration.net_helpers import daemon_on

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def _adjusted(source: Path, dest: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    doc = yaml.safe_load(source.read_text())
    change(doc)
    dest.write_text(yaml.safe_dump(doc) if dest.suffix == ".yaml" else json.dumps(doc))
    return dest


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # 127.0.0.1 only
        return str(resp.read().decode())


def test_blog_walkthrough(crib_factory: Callable[..., CribDaemon], bed: Testbed, tmp_path: Path,
                          session_tag: str) -> None:
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    cli = Cli(daemon.endpoint)
    tar = tmp_path / "blog-images.tar"
    built = subprocess.run([sys.executable, str(EXAMPLES / "blog_images.py"), str(tar)], capture_output=True,
                           text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    cli.ok("image", "import", str(tar))
    tags = sorted(t for i in cli.json("images")["images"] for t in i["repoTags"])
    assert tags == ["example.com/blog-db:1", "example.com/blog-web:1"]

    port = free_port()

    def pod_change(doc: dict[str, Any]) -> None:
        doc["log_directory"] = str(tmp_path / "logs")
        doc["port_mappings"][0]["host_port"] = port
        doc["linux"]["cgroup_parent"] = f"/{session_tag}/blog"

    pod_file = _adjusted(EXAMPLES / "blog" / "pod.yaml", tmp_path / "pod.yaml", pod_change)
    pod = cli.ok("runp", str(pod_file)).strip()
    bed.sandbox_ids.append(pod)
    try:
        db = cli.ok("create", pod, str(EXAMPLES / "blog" / "db.yaml"), str(pod_file)).strip()
        web = cli.ok("create", pod, str(EXAMPLES / "blog" / "web.yaml"), str(pod_file)).strip()
        assert cli.ok("start", db, web).split() == [db, web]
        running = cli.json("ps", "--pod", pod)["containers"]
        assert sorted(c["metadata"]["name"] for c in running) == ["db", "web"]

        # Through the hostPort: web asks db (127.0.0.1:3306 in the pod) to add a post, then lists them.
        base = f"http://127.0.0.1:{port}/cgi-bin"
        wait_for(lambda: _get(f"{base}/post?hello%20world").strip() == "OK", timeout=30, what="the blog")
        page = _get(f"{base}/blog")
        assert "<h1>Notes from a crib pod</h1>" in page
        assert "<li>hello world</li>" in page
        assert cli.ok("exec", "-s", db, "kvdb", "LIST", "posts") == "hello world\n"
        assert cli.run("exec", "-s", web, "wget", "-qO-", f"http://127.0.0.1:{port}/").returncode != 0
        wait_for(lambda: "kvdb: LIST posts" in cli.run("logs", db).stderr, timeout=10, what="db's log")
        assert "kvdb: ADD posts" in cli.run("logs", db).stderr
        stamped = cli.run("logs", "--tail", "1", "-t", web).stderr
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}", stamped), stamped

        stats = cli.json("stats", "--pod", pod)["stats"]
        assert sorted(s["attributes"]["metadata"]["name"] for s in stats) == ["db", "web"]
        assert cli.json("statsp", pod)["stats"][0]["attributes"]["metadata"]["name"] == "blog"
        frame = cli.ok("top", "-b", "-n", "1", "-d", "0.2")
        assert re.search(rf"default/blog\s+{pod[:13]}\s+Ready", frame), frame
        assert cli.yaml("inspect", web)["status"]["labels"] == {"tier": "web"}
    finally:
        cli.ok("rmp", "-f", pod)
    out = cli.ok("rmi", "example.com/blog-web:1", "example.com/blog-db:1").splitlines()
    assert sorted(out) == ["Deleted: example.com/blog-db:1", "Deleted: example.com/blog-web:1"]

