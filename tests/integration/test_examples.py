"""The README's offline walkthrough, as written: examples/ build, import and run on a real daemon.

The example configs are read from examples/ (so a change there that breaks them fails here); only what
must differ per test run is adjusted: the log directory, the host path of the web root, the cgroup parent
the leak check recognises, and no hostPort (the test daemon's network is loopback-only).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures.cri import Pod, wait_for
from tests.fixtures.daemon import CribDaemon

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def _load(name: str, message: Any) -> Any:
    doc = json.loads((EXAMPLES / name).read_text())
    # crictl reads KeyValue.value as a plain string; protobuf JSON wants bytes as base64.
    for env in doc.get("envs", []):
        env["value"] = base64.b64encode(env["value"].encode()).decode()
    return json_format.ParseDict(doc, message)


def test_readme_walkthrough(crib: CribDaemon, tmp_path: Path, session_tag: str) -> None:
    tar = tmp_path / "busybox-oci.tar"
    built = subprocess.run([sys.executable, str(EXAMPLES / "busybox_image.py"), str(tar)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    argv = [sys.executable, "-m", "crib", "-r", crib.endpoint, "image", "import", str(tar)]
    imported = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert imported.returncode == 0, imported.stderr
    assert "example.com/busybox:latest" in imported.stdout

    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from crib\n")
    pod_cfg = _load("pod.json", api.PodSandboxConfig())
    pod_cfg.log_directory = str(tmp_path / "logs")
    pod_cfg.linux.cgroup_parent = f"/{session_tag}/example"
    del pod_cfg.port_mappings[:]
    web_cfg = _load("container-web.json", api.ContainerConfig())
    web_cfg.mounts[0].host_path = str(www)
    client_cfg = _load("container-client.json", api.ContainerConfig())

    pod = Pod(crib, pod_cfg)
    try:
        web = pod.run(web_cfg)
        client = pod.run(client_cfg)
        env = pod.exec(web, "env")
        assert b"GREETING=hello from crib" in env.stdout
        client_log = Path(pod.status(client).log_path)
        assert client_log == tmp_path / "logs" / "client" / "0.log"
        # The client fetches the page from the web container over the pod's shared loopback.
        wait_for(lambda: client_log.exists() and "stdout F hello from crib" in client_log.read_text(),
                 timeout=20)
        resolv = pod.exec(web, "cat", "/etc/resolv.conf").stdout.decode()
        assert "search example.local" in resolv
    finally:
        pod.remove()
    crib.images.RemoveImage(api.RemoveImageRequest(image=api.ImageSpec(image="example.com/busybox:latest")))
