"""The Prometheus endpoint of a real daemon: families and values after real calls, parsed by
prometheus-client's own parser; off (and prometheus_client never imported) when no address is set."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crib._proto.runtime.v1 import api_pb2 as api
from crib.streaming import client
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull
from tests.fixtures.daemon import CribDaemon
from tests.integration.net_helpers import free_port
from tests.unit.test_metrics_endpoint import _cert

Families = dict[str, list[tuple[str, dict[str, str], float]]]


def _scrape(port: int) -> Families:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


async def _scrape_during_exec(daemon: CribDaemon, cid: str, port: int) -> Families:
    """A scrape taken while one exec session (cat, waiting on its stdin) is live."""
    url = daemon.runtime.Exec(api.ExecRequest(container_id=cid, cmd=["cat"], stdin=True, stdout=True)).url
    async with await client.RemoteCommand.connect(url, stdin=True, stdout=True, stderr=False) as rc:
        await rc.write(b"ping\n")
        assert await rc.read_stdout() == b"ping\n"  # the session is up on both ends
        families = await asyncio.to_thread(_scrape, port)
        await rc.close_stdin()
        await rc.collect()
    return families


def _value(
    families: dict[str, list[tuple[str, dict[str, str], float]]], family: str, sample: str = "", **labels: str
) -> float:
    found = [
        v
        for name, lab, v in families[family]
        if (not sample or name == sample) and all(lab.get(k) == x for k, x in labels.items())
    ]
    assert len(found) == 1, (family, labels, families.get(family))
    return found[0]


def test_families_count_what_the_daemon_did(
    crib_factory: Callable[..., CribDaemon], images: img.Catalogue, session_tag: str
) -> None:
    port = free_port()
    daemon = crib_factory({"metrics": {"address": f"127.0.0.1:{port}"}})
    busybox = images.reference(img.BUSYBOX)
    pull(daemon, busybox)
    pod = Pod(daemon, pod_config(session_tag))
    try:
        cid = pod.run(container_config(busybox, "app", command=["sleep", "1000"]))
        code, _ = code_of(
            lambda: daemon.runtime.ContainerStatus(api.ContainerStatusRequest(container_id="f" * 64))
        )
        assert code == grpc.StatusCode.NOT_FOUND
        families = _scrape(port)

        assert _value(families, "crib_operations", operation="RunPodSandbox", code="OK") == 1
        assert _value(families, "crib_operations", operation="ContainerStatus", code="NOT_FOUND") == 1
        assert (
            _value(
                families,
                "crib_operation_duration_seconds",
                "crib_operation_duration_seconds_count",
                operation="StartContainer",
            )
            == 1
        )
        assert (
            _value(
                families,
                "crib_operation_duration_seconds",
                "crib_operation_duration_seconds_bucket",
                operation="StartContainer",
                le="+Inf",
            )
            == 1
        )
        assert _value(families, "crib_pods", state="ready") == 1
        assert _value(families, "crib_containers", state="running") == 1
        assert _value(families, "crib_image_pulls", outcome="success") == 1
        assert _value(families, "crib_image_pull_bytes") > 100_000  # busybox-static's layer, at least
        assert (
            _value(
                families,
                "crib_cni_operation_duration_seconds",
                "crib_cni_operation_duration_seconds_count",
                operation="ADD",
                network="crib-test-loopback",
            )
            == 1
        )
        assert _value(families, "crib_restarts_restored") == 0
        assert _value(families, "crib_streaming_sessions", kind="exec") == 0
        assert _value(families, "crib_streaming_sessions", kind="portforward") == 0
        live = asyncio.run(_scrape_during_exec(daemon, cid, port))
        assert _value(live, "crib_streaming_sessions", kind="exec") == 1
        assert _value(live, "crib_streaming_sessions", kind="attach") == 0
        assert _value(families, "process_resident_memory_bytes") > 10 << 20
        assert (
            _value(
                families,
                "container_memory_working_set_bytes",
                container="app",
                pod=pod.config.metadata.name,
                namespace="crib-test",
                id=cid,
            )
            > 0
        )

        daemon.restart()
        families = _scrape(port)
        assert _value(families, "crib_restarts_restored") == 2  # the pod and its container, taken over
        # Counters are the daemon process's own: the new one has served its start-up Version calls only.
        assert _value(families, "crib_operations", operation="Version", code="OK") >= 1
        assert not [s for s in families["crib_operations"] if s[1]["operation"] == "RunPodSandbox"]
    finally:
        pod.remove()


def test_no_address_no_endpoint_and_no_prometheus_client() -> None:
    """The daemon loads without prometheus_client (the idle RSS budget): it comes only with [metrics]."""
    code = (
        "import sys, crib.daemon, crib.node, crib.cri.runtime_servicer, crib.cli.main; "
        "sys.exit('prometheus_client' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_the_endpoint_over_tls_with_client_certificates(crib_factory: Callable[..., CribDaemon],
                                                         tmp_path: Path) -> None:
    ca_key, ca_crt = _cert(tmp_path, "ca")
    key, crt = _cert(tmp_path, "server")
    client_key, client_crt = _cert(tmp_path, "client", ca=(ca_key, ca_crt))
    port = free_port()
    crib_factory({"metrics": {"address": f"127.0.0.1:{port}", "tls_cert": str(crt), "tls_key": str(key),
                              "tls_ca": str(ca_crt), "container_metrics": False}})
    ctx = ssl.create_default_context(cafile=str(crt))
    ctx.load_cert_chain(str(client_crt), str(client_key))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=30) as resp:
        text = resp.read().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "crib_operations" in names
    assert not any(n.startswith("container_") for n in names)  # container_metrics = false
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ssl.create_default_context(
            cafile=str(crt)), timeout=30).read()
