"""NRI end to end: crib's test plugin (tests/fixtures/nri_plugin.py) against a real daemon and containers.

Event order for pods and containers (a failed one too), adjustments visible inside the running container
and in its cgroup, conflicts between plugins, hung and crashing plugins, synchronization with existing
objects and after a daemon restart, a pre-installed plugin crib starts itself, container updates and
evictions from plugins.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from crib._proto.nri.v1alpha1 import api_pb2 as nri
from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, code_of, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon, pid_alive
from tests.fixtures.nri_plugin import NriTestPlugin, hang

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugins() -> Iterator[Callable[..., NriTestPlugin]]:
    started: list[NriTestPlugin] = []

    def connect(daemon: CribDaemon, name: str = "test", idx: str = "50", **kw: Any) -> NriTestPlugin:
        plugin = NriTestPlugin(str(daemon.nri_socket), name, idx, **kw)
        started.append(plugin)
        return plugin

    yield connect
    for plugin in started:
        plugin.stop()


@pytest.fixture
def crib(crib_factory: Callable[..., CribDaemon], tmp_path: Path) -> CribDaemon:
    return crib_factory({"nri": {"request_timeout": "1s", "cdi_spec_dirs": [str(tmp_path / "cdi")]}})


@pytest.fixture
def busybox(crib: CribDaemon, images: img.Catalogue) -> str:
    reference = images.reference(img.BUSYBOX)
    pull(crib, reference)
    return reference


@pytest.fixture
def new_pod(crib: CribDaemon, session_tag: str) -> Iterator[Callable[[], Pod]]:
    made: list[Pod] = []

    def make() -> Pod:
        pod = Pod(crib, pod_config(session_tag))
        made.append(pod)
        return pod

    yield make
    for pod in made:
        pod.remove()


def _start(pod: Pod, cid: str) -> None:
    pod.rt.StartContainer(api.StartContainerRequest(container_id=cid), timeout=60)


def _spec(pod: Pod, cid: str) -> dict[str, Any]:
    info = pod.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"]
    spec: dict[str, Any] = json.loads(info)["runtimeSpec"]
    return spec


def _cgroup(pod: Pod, cid: str, controller: str, name: str) -> str:
    pid = json.loads(
        pod.rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"]
    )["pid"]
    path = next(
        line.split(":", 2)[2]
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if f":{controller}:" in line or f",{controller}:" in line
    )
    return Path(f"/sys/fs/cgroup/{controller}{path}/{name}").read_text().strip()


def test_event_order_for_pods_and_containers_including_a_failed_one(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], new_pod: Callable[[], Pod], busybox: str
) -> None:
    plugin = plugins(crib).start()
    pod = new_pod()
    ok = pod.create(container_config(busybox, "ok", command=["sleep", "1000"]))
    _start(pod, ok)
    bad = pod.create(container_config(busybox, "bad", command=["sh", "-c", "exit 1"]))
    _start(pod, bad)
    pod.wait_exit(bad)
    plugin.wait_for(lambda: plugin.of("StopContainer", container_id=bad), what="the failed container's stop")
    pod.rt.StopContainer(api.StopContainerRequest(container_id=ok, timeout=0))
    for cid in (ok, bad):
        pod.rt.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
    pod.remove()
    lifecycle = [
        "CreateContainer",
        "PostCreateContainer",
        "StartContainer",
        "PostStartContainer",
        "StopContainer",
        "RemoveContainer",
    ]
    plugin.wait_for(
        lambda: plugin.methods(pod_id=pod.id)[-1:] == ["RemovePodSandbox"], what="the pod's removal"
    )
    assert plugin.methods(container_id=ok) == lifecycle
    # `sh -c "exit 1"` may exit before `runc start` returns; then no PostStartContainer follows its stop
    assert [m for m in plugin.methods(container_id=bad) if m != "PostStartContainer"] == [
        m for m in lifecycle if m != "PostStartContainer"
    ]
    assert (
        plugin.methods(container_id=bad).index("StopContainer") == len(plugin.methods(container_id=bad)) - 2
    )
    pod_events = [m for m in plugin.methods(pod_id=pod.id) if m.endswith("PodSandbox")]
    assert pod_events == ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"]
    run = plugin.of("RunPodSandbox", pod_id=pod.id)[0].request.pod
    assert (run.name, run.namespace, run.uid) == (
        pod.config.metadata.name,
        "crib-test",
        pod.config.metadata.uid,
    )
    assert run.linux.cgroup_parent == pod.config.linux.cgroup_parent
    stop = plugin.of("StopContainer", container_id=bad)[0].request
    assert (stop.container.name, stop.container.exit_code, stop.pod.id) == ("bad", 1, pod.id)
    assert stop.container.state == nri.CONTAINER_STOPPED


def test_adjustments_land_in_the_running_container(
    crib: CribDaemon,
    plugins: Callable[..., NriTestPlugin],
    new_pod: Callable[[], Pod],
    busybox: str,
    tmp_path: Path,
) -> None:
    data = tmp_path / "nri-data"
    data.mkdir()
    (data / "file").write_text("from the plugin\n")
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    (cdi / "test.json").write_text(
        json.dumps(
            {
                "cdiVersion": "0.6.0",
                "kind": "crib.test/dev",
                "devices": [
                    {
                        "name": "one",
                        "containerEdits": {
                            "env": ["CDI_DEVICE=one"],
                            "deviceNodes": [{"path": "/dev/crib-null", "hostPath": "/dev/null"}],
                        },
                    }
                ],
            }
        )
    )
    plugin = plugins(crib)
    plugin.on(
        "CreateContainer",
        lambda _req: nri.CreateContainerResponse(
            adjust=nri.ContainerAdjustment(
                env=[nri.KeyValue(key="FROM_NRI", value="yes"), nri.KeyValue(key="-DROPPED")],
                annotations={"nri.example/touched": "true"},
                mounts=[
                    nri.Mount(destination="/nri-data", source=str(data), type="bind", options=["rbind", "ro"])
                ],
                CDI_devices=[nri.CDIDevice(name="crib.test/dev=one")],
                linux=nri.LinuxContainerAdjustment(
                    resources=nri.LinuxResources(
                        memory=nri.LinuxMemory(limit=nri.OptionalInt64(value=48 << 20)),
                        cpu=nri.LinuxCPU(shares=nri.OptionalUInt64(value=321)),
                    )
                ),
            )
        ),
    )
    plugin.start()
    pod = new_pod()
    cid = pod.create(
        container_config(busybox, command=["sleep", "1000"], envs=[api.KeyValue(key="DROPPED", value=b"1")])
    )
    _start(pod, cid)
    env = pod.exec(cid, "env").stdout.decode()
    assert "FROM_NRI=yes" in env
    assert "CDI_DEVICE=one" in env
    assert "DROPPED=" not in env
    assert pod.exec(cid, "cat", "/nri-data/file").stdout == b"from the plugin\n"
    assert pod.exec(cid, "sh", "-c", "echo x > /nri-data/new").exit_code != 0  # read-only as asked
    assert pod.exec(cid, "test", "-c", "/dev/crib-null").exit_code == 0
    assert _spec(pod, cid)["annotations"]["nri.example/touched"] == "true"
    assert _cgroup(pod, cid, "memory", "memory.limit_in_bytes") == str(48 << 20)
    assert _cgroup(pod, cid, "cpu", "cpu.shares") == "321"


def test_conflicting_plugins_fail_the_creation_and_leave_nothing(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], new_pod: Callable[[], Pod], busybox: str
) -> None:
    for name, idx in (("first", "10"), ("second", "20")):
        p = plugins(crib, name, idx)
        p.on(
            "CreateContainer",
            lambda _req, n=name: nri.CreateContainerResponse(
                adjust=nri.ContainerAdjustment(
                    linux=nri.LinuxContainerAdjustment(cgroups_path=f"/elsewhere/{n}")
                )
            ),
        )
        p.start()
    pod = new_pod()
    code, message = code_of(lambda: pod.create(container_config(busybox, "clash", command=["sleep", "1"])))
    assert code == grpc.StatusCode.UNKNOWN
    assert "'10-first' and '20-second' both tried to set cgroups path" in message
    assert pod.rt.ListContainers(api.ListContainersRequest()).containers == []  # the leak check does the rest


def test_hung_and_crashing_plugins_are_cut_off_and_the_calls_go_on(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], new_pod: Callable[[], Pod], busybox: str
) -> None:
    hung, crashing, healthy = (
        plugins(crib, "hung", "10"),
        plugins(crib, "crashing", "20"),
        plugins(crib, "ok", "30"),
    )
    hung.on("CreateContainer", hang())

    def crash(_req: Any) -> None:
        assert crashing._peer is not None
        crashing._peer.close("simulated crash")  # the plugin's end goes away mid-request

    crashing.on("RunPodSandbox", crash)
    for p in (hung, crashing, healthy):
        p.start()
    pod = new_pod()  # the crashing plugin dies while handling this: the pod is created anyway
    crashing.wait_disconnected()
    cid = pod.create(container_config(busybox, command=["sleep", "1000"]))  # hung: cut after request_timeout
    hung.wait_disconnected()
    assert healthy.connected
    assert [e.container_id for e in healthy.of("CreateContainer")] == [cid]
    log = crib.wait_for_log("NRI plugin disconnected plugin=10-hung")
    assert "request_timeout" in log
    second = pod.create(container_config(busybox, command=["sleep", "1000"]))
    assert [e.container_id for e in healthy.of("CreateContainer")] == [cid, second]


def test_synchronize_with_existing_objects_and_after_a_restart(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], new_pod: Callable[[], Pod], busybox: str
) -> None:
    pod = new_pod()
    cid = pod.create(container_config(busybox, command=["sleep", "1000"]))
    _start(pod, cid)
    first = plugins(crib, "watcher", "10").start()
    assert (first.synced_pods, first.synced_containers) == ([pod.id], [cid])
    crib.restart()
    first.wait_disconnected()
    again = plugins(
        crib, "watcher", "10"
    ).start()  # a plugin reconnects after the restart and is synchronized
    assert (again.synced_pods, again.synced_containers) == ([pod.id], [cid])
    pod.rt.StopContainer(api.StopContainerRequest(container_id=cid, timeout=0))
    again.wait_for(lambda: again.of("StopContainer", container_id=cid), what="the stop after the restart")


def test_a_pre_installed_plugin_is_started_configured_and_stopped(
    crib_factory: Callable[..., CribDaemon], session_tag: str, images: img.Catalogue, tmp_path: Path
) -> None:
    plugin_dir, conf_dir, events = tmp_path / "plugins", tmp_path / "conf", tmp_path / "events.jsonl"
    plugin_dir.mkdir()
    conf_dir.mkdir()
    exe = plugin_dir / "20-logger"
    exe.write_text(f"#!/bin/sh\ncd {REPO}\nexec {sys.executable} -m tests.fixtures.nri_plugin\n")
    exe.chmod(0o755)
    (conf_dir / "logger.conf").write_text(json.dumps({"log": str(events), "env": {"LAUNCHED": "by-crib"}}))
    crib = crib_factory(
        {
            "nri": {
                "plugin_path": str(plugin_dir),
                "plugin_config_path": str(conf_dir),
                "disable_connections": True,
            }
        }
    )
    assert not crib.nri_socket.exists()
    line = crib.wait_for_log("NRI plugin registered plugin=20-logger")
    assert "launched=true" in line
    reference = images.reference(img.BUSYBOX)
    pull(crib, reference)
    pod = Pod(crib, pod_config(session_tag))
    try:
        cid = pod.run(container_config(reference, command=["sleep", "1000"]))
        assert b"LAUNCHED=by-crib" in pod.exec(cid, "env").stdout
    finally:
        pod.remove()
    logged = [json.loads(x)["method"] for x in events.read_text().splitlines()]
    assert logged[:2] == ["RunPodSandbox", "CreateContainer"]
    assert logged[-1] == "RemovePodSandbox"
    pids = _launched_plugins()
    assert len(pids) == 1
    crib.restart()  # the plugin goes with the daemon and comes back with it, synchronized again
    assert not pid_alive(pids[0])
    wait_for(lambda: len(_log_lines(crib, "NRI plugin synchronized plugin=20-logger")) == 2, timeout=15)
    again = _launched_plugins()
    assert len(again) == 1
    assert again != pids
    crib.stop()
    assert not pid_alive(again[0])


def _launched_plugins() -> list[int]:
    return [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _cmdline(p).endswith("tests.fixtures.nri_plugin") and str(REPO) in _cwd(p)
    ]


def _cwd(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cwd").resolve().as_posix()
    except OSError:
        return ""


def _log_lines(crib: CribDaemon, needle: str) -> list[str]:
    return [line for line in crib.log_path.read_text(errors="replace").splitlines() if needle in line]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_updates_unsolicited_updates_and_evictions(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], new_pod: Callable[[], Pod], busybox: str
) -> None:
    plugin = plugins(crib)

    def more_cpu(req: Any) -> Any:
        shares = nri.LinuxResources(cpu=nri.LinuxCPU(shares=nri.OptionalUInt64(value=777)))
        return nri.UpdateContainerResponse(
            update=[
                nri.ContainerUpdate(
                    container_id=req.container.id, linux=nri.LinuxContainerUpdate(resources=shares)
                )
            ]
        )

    plugin.on("UpdateContainer", more_cpu)
    plugin.start()
    pod = new_pod()
    web, victim = (
        pod.run(container_config(busybox, name, command=["sleep", "1000"])) for name in ("web", "victim")
    )
    pod.rt.UpdateContainerResources(
        api.UpdateContainerResourcesRequest(
            container_id=web,
            linux=api.LinuxContainerResources(cpu_shares=256, memory_limit_in_bytes=64 << 20),
        )
    )
    assert _cgroup(pod, web, "cpu", "cpu.shares") == "777"  # the plugin's change to the requested update
    assert _cgroup(pod, web, "memory", "memory.limit_in_bytes") == str(64 << 20)
    plugin.wait_for(lambda: plugin.of("PostUpdateContainer", container_id=web), what="PostUpdateContainer")
    failed = plugin.update_containers(
        [
            nri.ContainerUpdate(
                container_id=web,
                linux=nri.LinuxContainerUpdate(
                    resources=nri.LinuxResources(
                        memory=nri.LinuxMemory(limit=nri.OptionalInt64(value=40 << 20))
                    )
                ),
            ),
            nri.ContainerUpdate(container_id="no-such-container", ignore_failure=True),
        ],
        [nri.ContainerEviction(container_id=victim, reason="over budget")],
    )
    assert failed == ["no-such-container"]
    assert _cgroup(pod, web, "memory", "memory.limit_in_bytes") == str(40 << 20)
    assert pod.wait_exit(victim).state == api.CONTAINER_EXITED
    assert pod.status(web).state == api.CONTAINER_RUNNING


def test_a_failed_run_pod_sandbox_hook_leaves_nothing_and_the_retry_works(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], session_tag: str
) -> None:
    plugin = plugins(crib)
    refused: list[str] = []

    def refuse_once(req: Any) -> None:
        if not refused:
            refused.append(req.pod.id)
            raise RuntimeError("not this one")

    plugin.on("RunPodSandbox", refuse_once)
    plugin.start()
    config = pod_config(session_tag)
    code, message = code_of(lambda: Pod(crib, config))
    assert code == grpc.StatusCode.UNKNOWN
    assert "NRI plugin 50-test failed RunPodSandbox: not this one" in message
    assert crib.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items == []
    plugin.wait_for(
        lambda: plugin.of("RemovePodSandbox", pod_id=refused[0]), what="the undo's RemovePodSandbox"
    )
    pod = Pod(crib, config)
    try:
        assert pod.id != refused[0]
        wait_for(
            lambda: (
                crib.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id)).status.state
                == api.SANDBOX_READY
            )
        )
    finally:
        pod.remove()


def test_rlimits_seccomp_hooks_devices_and_oom_score_land_in_the_running_container(
    crib: CribDaemon,
    plugins: Callable[..., NriTestPlugin],
    new_pod: Callable[[], Pod],
    busybox: str,
    tmp_path: Path,
) -> None:
    ran = tmp_path / "hook-ran"
    deny_mkdir = nri.LinuxSyscall(
        names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO", errno_ret=nri.OptionalUInt32(value=1)
    )
    plugin = plugins(crib)
    plugin.on(
        "CreateContainer",
        lambda _req: nri.CreateContainerResponse(
            adjust=nri.ContainerAdjustment(
                rlimits=[nri.POSIXRlimit(type="RLIMIT_NOFILE", hard=2222, soft=1111)],
                hooks=nri.Hooks(create_runtime=[nri.Hook(path="/bin/sh", args=["sh", "-c", f"cat > {ran}"])]),
                linux=nri.LinuxContainerAdjustment(
                    oom_score_adj=nri.OptionalInt(value=321),
                    devices=[nri.LinuxDevice(path="/dev/crib-zero", type="c", major=1, minor=5)],
                    seccomp_policy=nri.LinuxSeccomp(default_action="SCMP_ACT_ALLOW", syscalls=[deny_mkdir]),
                ),
            )
        ),
    )
    plugin.start()
    pod = new_pod()
    cid = pod.create(container_config(busybox, command=["sleep", "1000"]))
    # createRuntime runs at `runc create`, on the host, with the container's state on stdin
    assert json.loads(ran.read_text())["id"] == cid
    _start(pod, cid)
    # the container's own process (PID 1 of its PID namespace): runc exec races Go's start-up raising the
    # soft RLIMIT_NOFILE of its child to the hard one, so an exec'd process may show soft == hard
    limits = pod.exec(cid, "cat", "/proc/1/limits").stdout.decode()
    assert next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3:5] == [
        "1111",
        "2222",
    ]
    assert pod.exec(cid, "cat", "/proc/1/oom_score_adj").stdout.strip() == b"321"
    # the device node is made at the path the plugin asked for, and works
    assert pod.exec(cid, "sh", "-c", "head -c 5 /dev/crib-zero | wc -c").stdout.strip() == b"5"
    denied = pod.exec(cid, "mkdir", "/tmp/denied")
    assert denied.exit_code != 0
    assert b"Operation not permitted" in denied.stderr
    assert pod.exec(cid, "touch", "/tmp/allowed").exit_code == 0  # only what the policy names is denied
    spec = _spec(pod, cid)
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    assert spec["process"]["oomScoreAdj"] == 321


def test_a_malformed_message_closes_only_that_plugins_connection(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], new_pod: Callable[[], Pod]
) -> None:
    bad, good = plugins(crib, "bad", "10").start(), plugins(crib, "good", "20").start()
    # a multiplexer frame header announcing a payload far over the limit
    bad.send_raw((1).to_bytes(4, "big") + (64 << 20).to_bytes(4, "big"))
    bad.wait_disconnected()
    assert "protocol error" in crib.wait_for_log("NRI plugin disconnected plugin=10-bad")
    pod = new_pod()
    assert good.connected
    assert [e.pod_id for e in good.of("RunPodSandbox")] == [pod.id]
    assert bad.of("RunPodSandbox") == []
    again = plugins(crib, "bad", "10").start()  # the socket still accepts plugins
    assert again.synced_pods == [pod.id]


def test_objects_created_during_synchronize_are_neither_lost_nor_doubled(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], new_pod: Callable[[], Pod], busybox: str
) -> None:
    import threading

    pod = new_pod()
    early = pod.run(container_config(busybox, "early", command=["sleep", "1000"]))
    syncing = threading.Event()

    async def slow_sync(_req: Any) -> None:
        import asyncio

        syncing.set()
        await asyncio.sleep(1.5)  # the daemon creates and stops objects meanwhile

    plugin = plugins(crib, on_synchronize=slow_sync)
    plugin.start(wait_ready=False)
    assert syncing.wait(10)
    late = pod.create(container_config(busybox, "late", command=["sleep", "1000"]))
    pod.rt.StopContainer(api.StopContainerRequest(container_id=early, timeout=0))
    second = new_pod()
    plugin.wait_ready()
    assert (plugin.synced_pods, plugin.synced_containers) == ([pod.id], [early])
    plugin.wait_for(lambda: plugin.of("PostCreateContainer", container_id=late), what="PostCreateContainer")
    plugin.wait_for(lambda: plugin.of("StopContainer", container_id=early), what="the early one's stop")
    assert plugin.methods(container_id=late) == ["CreateContainer", "PostCreateContainer"]
    assert plugin.methods(container_id=early) == ["StopContainer"]
    assert plugin.methods(pod_id=second.id) == ["RunPodSandbox"]
    assert plugin.of("RunPodSandbox", pod_id=pod.id) == []


def test_two_daemons_on_one_socket_the_later_takes_it_over_and_the_earlier_leaves_it(
    crib_factory: Callable[..., CribDaemon],
    plugins: Callable[..., NriTestPlugin],
    session_tag: str,
    tmp_path: Path,
) -> None:
    shared = tmp_path / "nri" / "nri.sock"
    first = crib_factory({"nri": {"socket_path": str(shared)}}, name="first")
    on_first = plugins(first, "early", "10").start()
    second = crib_factory({"nri": {"socket_path": str(shared)}}, name="second")
    assert "taking it over" in second.wait_for_log("NRI socket was in use by another process")
    on_second = plugins(second, "late", "20").start()
    second.wait_for_log("NRI plugin registered plugin=20-late")
    assert "plugin=20-late" not in first.log_tail(1000)
    pods = [Pod(first, pod_config(session_tag)), Pod(second, pod_config(session_tag))]
    try:
        # each plugin stays with the daemon it connected to
        assert [e.pod_id for e in on_first.of("RunPodSandbox")] == [pods[0].id]
        assert [e.pod_id for e in on_second.of("RunPodSandbox")] == [pods[1].id]
    finally:
        for pod in reversed(pods):  # the first daemon made the session's cgroup parent: it removes it last
            pod.remove()
    inode = shared.stat().st_ino
    first.stop()  # must not remove the socket that is no longer its own
    assert shared.is_socket()
    assert shared.stat().st_ino == inode
    assert on_second.connected
    second.stop()
    assert not shared.exists()


def _memory_limit(cid: str, limit: int) -> nri.ContainerUpdate:
    resources = nri.LinuxResources(memory=nri.LinuxMemory(limit=nri.OptionalInt64(value=limit)))
    return nri.ContainerUpdate(container_id=cid, linux=nri.LinuxContainerUpdate(resources=resources))


def test_updates_and_evictions_in_answers_to_synchronize_create_and_stop(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], new_pod: Callable[[], Pod], busybox: str
) -> None:
    pod = new_pod()
    old, victim, stopper = (
        pod.run(container_config(busybox, name, command=["sleep", "1000"]))
        for name in ("old", "victim", "stop")
    )
    plugin = plugins(
        crib, on_synchronize=lambda _req: nri.SynchronizeResponse(update=[_memory_limit(old, 50 << 20)])
    )
    plugin.on(
        "CreateContainer",
        lambda _req: nri.CreateContainerResponse(
            update=[_memory_limit(old, 60 << 20)],
            evict=[nri.ContainerEviction(container_id=victim, reason="room")],
        ),
    )
    plugin.on(
        "StopContainer",
        lambda req: (
            nri.StopContainerResponse(update=[_memory_limit(old, 70 << 20)])
            if req.container.id == stopper
            else None
        ),
    )
    plugin.start()
    wait_for(lambda: _cgroup(pod, old, "memory", "memory.limit_in_bytes") == str(50 << 20))
    pod.create(container_config(busybox, "new", command=["sleep", "1000"]))
    assert _cgroup(pod, old, "memory", "memory.limit_in_bytes") == str(60 << 20)
    assert pod.wait_exit(victim).state == api.CONTAINER_EXITED
    pod.rt.StopContainer(api.StopContainerRequest(container_id=stopper, timeout=0))
    wait_for(lambda: _cgroup(pod, old, "memory", "memory.limit_in_bytes") == str(70 << 20))
    assert pod.status(old).state == api.CONTAINER_RUNNING
    # kept in its config.json for a restart (written just after `runc update`)
    wait_for(lambda: _spec(pod, old)["linux"]["resources"]["memory"]["limit"] == 70 << 20)


def test_a_plugin_hanging_in_synchronize_is_cut_off_and_pods_go_on(
    crib_factory: Callable[..., CribDaemon], plugins: Callable[..., NriTestPlugin], session_tag: str
) -> None:
    crib = crib_factory({"nri": {"registration_timeout": "2s"}})
    stuck = plugins(crib, "stuck", "10", on_synchronize=hang())
    stuck.start(wait_ready=False)
    crib.wait_for_log("NRI plugin registered plugin=10-stuck")
    pod = Pod(crib, pod_config(session_tag))  # waits behind the Synchronize at most registration_timeout
    try:
        stuck.wait_disconnected()
        assert "registration_timeout" in crib.wait_for_log("NRI plugin disconnected plugin=10-stuck")
        assert stuck.of("RunPodSandbox") == []
        healthy = plugins(crib, "ok", "20").start()
        assert healthy.synced_pods == [pod.id]
    finally:
        pod.remove()


def test_a_pre_installed_plugin_that_crashes_is_forgotten(
    crib_factory: Callable[..., CribDaemon], session_tag: str, tmp_path: Path
) -> None:
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "10-crasher").write_text("#!/bin/sh\necho dying >&2\nexit 3\n")
    (plugin_dir / "10-crasher").chmod(0o755)
    crib = crib_factory({"nri": {"plugin_path": str(plugin_dir)}})
    # its exit status is 3, or crib's kill's when crib saw the hang-up first; what it printed is logged
    line = crib.wait_for_log("NRI plugin process exited plugin=10-crasher")
    assert "dying" in line
    crib.wait_for_log("NRI plugin disconnected plugin=10-crasher")
    pod = Pod(crib, pod_config(session_tag))
    try:
        assert crib.runtime.ListPodSandbox(api.ListPodSandboxRequest()).items[0].id == pod.id
    finally:
        pod.remove()


def test_an_adjustment_runc_would_ignore_is_refused_and_leaves_nothing(
    crib: CribDaemon, plugins: Callable[..., NriTestPlugin], new_pod: Callable[[], Pod], busybox: str
) -> None:
    plugin = plugins(crib, "ioprio", "30")
    priority = nri.LinuxIOPriority(priority=6, **{"class": nri.IOPRIO_CLASS_BE})
    plugin.on(
        "CreateContainer",
        lambda _req: nri.CreateContainerResponse(
            adjust=nri.ContainerAdjustment(linux=nri.LinuxContainerAdjustment(io_priority=priority))
        ),
    )
    plugin.start()
    pod = new_pod()
    # runc 1.1.5 takes process.ioPriority and runs the container at "none: prio 0": refused, not dropped
    code, message = code_of(lambda: pod.create(container_config(busybox, command=["sleep", "1000"])))
    assert code == grpc.StatusCode.UNKNOWN
    assert "'30-ioprio' asked to set an I/O priority, which crib cannot apply with runc 1.1" in message
    assert pod.rt.ListContainers(api.ListContainersRequest()).containers == []
