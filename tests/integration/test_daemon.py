"""The daemon as kubelet and crictl meet it: handshake, status, unimplemented RPCs, signals, locking."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
from pathlib import Path

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib._proto.runtime.v1 import api_pb2_grpc
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon


def test_version_answers_what_kubelet_requires(crib: CribDaemon) -> None:
    resp = crib.runtime.Version(api.VersionRequest(version="v1"), timeout=5)
    assert resp.version == "0.1.0"
    assert resp.runtime_name == "crib"
    assert resp.runtime_version == "0.1.0"
    assert resp.runtime_api_version == "v1"


def test_status_has_both_conditions_and_json_info(crib: CribDaemon) -> None:
    resp = crib.runtime.Status(api.StatusRequest(verbose=True), timeout=5)
    conditions = {c.type: c for c in resp.status.conditions}
    assert set(conditions) >= {"RuntimeReady", "NetworkReady"}
    assert conditions["RuntimeReady"].status is True
    if not conditions["NetworkReady"].status:
        assert conditions["NetworkReady"].reason
        assert conditions["NetworkReady"].message
    assert resp.info, "verbose status must carry info"
    for value in resp.info.values():
        json.loads(value)  # crictl parses every value as JSON
    effective = json.loads(resp.info["config"])
    assert effective["root"] == str(crib.root)
    assert effective["runtime"]["handlers"]["runc"]["path"] == "/usr/sbin/runc"
    assert {h.name for h in resp.runtime_handlers} >= {"", "runc"}

    quiet = crib.runtime.Status(api.StatusRequest(verbose=False), timeout=5)
    assert not quiet.info


def test_runtime_config_reports_cgroupfs(crib: CribDaemon) -> None:
    resp = crib.runtime.RuntimeConfig(api.RuntimeConfigRequest(), timeout=5)
    assert resp.linux.cgroup_driver == api.CGROUPFS


def test_socket_is_0660(crib: CribDaemon) -> None:
    mode = stat.S_IMODE(os.stat(crib.socket).st_mode)
    assert mode == 0o660
    assert stat.S_ISSOCK(os.stat(crib.socket).st_mode)


def test_socket_is_listed_under_its_own_path(crib: CribDaemon) -> None:
    """Tools find the daemon by its path in /proc/net/unix; grpc once bound "unix:///p" as "///p"."""
    paths = [line.split()[-1] for line in Path("/proc/net/unix").read_text().splitlines()[1:]
             if len(line.split()) == 8]
    assert str(crib.socket) in paths
    assert not [p for p in paths if p.endswith(str(crib.socket)) and p != str(crib.socket)]


def test_unbuilt_rpc_answers_unimplemented_naming_it(crib: CribDaemon) -> None:
    # CheckpointContainer needs CRIU; crib does not do it, and says so by name.
    with pytest.raises(grpc.RpcError) as info:
        crib.runtime.CheckpointContainer(api.CheckpointContainerRequest(container_id="x"), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CheckpointContainer" in info.value.details()
    # The daemon is still fine afterwards.
    assert crib.runtime.Version(api.VersionRequest(), timeout=5).version == "0.1.0"


def test_sigterm_exits_zero_and_removes_socket(crib: CribDaemon) -> None:
    crib.signal(signal.SIGTERM)
    assert crib.proc is not None
    assert crib.proc.wait(20) == 0
    assert not crib.socket.exists()
    assert "crib daemon stopped" in crib.log_tail()


def test_sigterm_waits_for_a_slow_call_in_flight(crib: CribDaemon, images: img.Catalogue, session_tag: str,
                                                 tmp_path: Path) -> None:
    """SIGTERM stops accepting calls, lets the one in flight finish with its answer, then exits 0; the
    container it ran in is left running (conmon owns it) for the next daemon."""
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    pod = Pod(crib, pod_config(session_tag, log_dir=tmp_path / "logs"))
    cid = pod.run(container_config(busybox, "sleeper", command=["sleep", "1000"]))
    marker = "/tmp/in-flight"
    command = ["sh", "-c", f"touch {marker}; sleep 3; echo finished"]
    slow = crib.runtime.ExecSync.future(api.ExecSyncRequest(container_id=cid, cmd=command, timeout=30),
                                        timeout=60)
    rootfs = crib.runroot / "containers" / cid / "rootfs"
    wait_for(lambda: (rootfs / marker.lstrip("/")).exists(), what="the exec to start")
    crib.signal(signal.SIGTERM)
    crib.wait_for_log("shutting down")
    with pytest.raises(grpc.RpcError) as info:  # no new calls once shutting down
        grpc_channel_version(crib)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    reply = slow.result(timeout=30)
    assert (reply.exit_code, reply.stdout) == (0, b"finished\n")
    assert crib.proc is not None
    assert crib.proc.wait(20) == 0
    assert "method=ExecSync" in crib.wait_for_log("method=ExecSync")
    crib.start()
    assert pod.status(cid).state == api.CONTAINER_RUNNING  # shutdown touched no container
    pod.remove()


def grpc_channel_version(crib: CribDaemon) -> None:
    """A Version call on a fresh connection (the test's shared channel may be the one being drained)."""
    with grpc.insecure_channel(crib.endpoint) as channel:
        api_pb2_grpc.RuntimeServiceStub(channel).Version(api.VersionRequest(), timeout=2)


def test_sigint_exits_zero(crib: CribDaemon) -> None:
    crib.signal(signal.SIGINT)
    assert crib.proc is not None
    assert crib.proc.wait(20) == 0


def test_second_daemon_on_same_root_refuses(crib: CribDaemon, crib_factory) -> None:
    second = crib_factory(name="second", start=False)
    second.root = crib.root  # same root, its own socket
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(20) == 1
    assert "already using root" in second.log_tail()
    # The first one is untouched.
    assert crib.runtime.Version(api.VersionRequest(), timeout=5).version == "0.1.0"


def test_second_daemon_on_same_socket_refuses(crib: CribDaemon, crib_factory) -> None:
    second = crib_factory(name="second", start=False)
    second.socket, second.endpoint = crib.socket, crib.endpoint
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(20) == 1
    assert "in use by another process" in second.log_tail()
    assert crib.runtime.Version(api.VersionRequest(), timeout=5).version == "0.1.0"


def test_stale_socket_is_replaced(crib_factory) -> None:
    daemon: CribDaemon = crib_factory(start=False)
    daemon.workdir.mkdir(parents=True)
    # A socket file nobody listens on, as a SIGKILLed daemon leaves behind.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(daemon.socket))
    assert daemon.socket.exists()
    daemon.start()
    assert daemon.runtime.Version(api.VersionRequest(), timeout=5).version == "0.1.0"
    assert "replaced stale socket" in daemon.log_tail()


def test_restart_after_sigkill(crib: CribDaemon) -> None:
    crib.kill()
    assert crib.socket.exists()  # the dead daemon's socket stays behind
    crib.start()
    assert crib.runtime.Version(api.VersionRequest(), timeout=5).version == "0.1.0"


def test_garbage_on_the_socket_does_not_kill_the_daemon(crib: CribDaemon) -> None:
    payloads = (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096),
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512))
    for payload in payloads:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(crib.socket))
            s.sendall(payload)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                s.recv(1024)
    assert crib.proc is not None
    assert crib.proc.poll() is None
    assert crib.runtime.Version(api.VersionRequest(), timeout=5).version == "0.1.0"


def test_corrupt_protobuf_is_invalid_argument_with_one_log_line(crib: CribDaemon) -> None:
    """Every RPC, fed bytes that are not its request message: INVALID_ARGUMENT, one line, no traceback."""
    corrupt = b"\x0a\x05ab"  # field 1 says 5 bytes follow, 2 do: truncated whatever the message's fields
    methods = [(service.name, m) for service in api.DESCRIPTOR.services_by_name.values()
               for m in service.methods]
    for service, method in methods:
        path = f"/runtime.v1.{service}/{method.name}"
        if method.server_streaming:
            call = crib.channel.unary_stream(path)
            with pytest.raises(grpc.RpcError) as info:
                list(call(corrupt, timeout=5))
        else:
            with pytest.raises(grpc.RpcError) as info:
                crib.channel.unary_unary(path)(corrupt, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.name, info.value.details())
        assert "not a valid protobuf message" in info.value.details()
    crib.wait_for_log(f"method={methods[-1][1].name} code=INVALID_ARGUMENT")
    log = crib.log_path.read_text()
    assert "Traceback" not in log
    assert "Unexpected" not in log
    assert sum("code=INVALID_ARGUMENT" in line for line in log.splitlines()) == len(methods)
    assert crib.runtime.Version(api.VersionRequest(), timeout=5).version == "0.1.0"


def test_bad_config_stops_the_start_with_file_and_key(crib_factory) -> None:
    daemon: CribDaemon = crib_factory({"runtime": {"conmon_path": "/usr/bin/conmon"}}, start=False)
    daemon.start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(20) == 2
    log = daemon.log_tail()
    assert str(daemon.config_file) in log
    assert "runtime.conmon_path" in log


def test_every_rpc_is_logged_with_method_code_and_duration(crib: CribDaemon) -> None:
    crib.runtime.RuntimeConfig(api.RuntimeConfigRequest(), timeout=5)
    with pytest.raises(grpc.RpcError):
        crib.runtime.StartContainer(api.StartContainerRequest(container_id="abc"), timeout=5)
    config_line = crib.wait_for_log("method=RuntimeConfig")
    assert "code=OK" in config_line
    assert "duration_ms=" in config_line
    start_line = crib.wait_for_log("method=StartContainer")
    assert "container=abc" in start_line
    assert "code=NOT_FOUND" in start_line
