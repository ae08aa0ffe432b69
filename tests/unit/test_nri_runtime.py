"""The NRI runtime (crib.nri) with a fake node and crib's test plugin over a real unix socket (no root).

What is checked here is the protocol logic: order, synchronization, timeouts, failure isolation, merging.
tests/integration/test_nri.py runs the same plugin against a real daemon with real containers.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from crib._proto.nri.v1alpha1 import api_pb2 as api
from crib.config import Duration, NriConfig
from crib.errors import PluginError
from crib.hooks import ContainerStep, PodStep
from crib.nri import NriRuntime
from crib.nri.ttrpc import UNIMPLEMENTED, RemoteError
from crib.state.records import ContainerRecord, Phase, PodMeta, SandboxRecord
from tests.fixtures.nri_plugin import NriTestPlugin, fail, hang


class Node:
    """The node as NRI sees it (crib.nri.NodeAccess): no objects at start, a log of what plugins changed."""

    def __init__(self) -> None:
        self.updated: list[tuple[str, dict[str, Any]]] = []
        self.evicted: list[tuple[str, str]] = []

    def pods(self) -> list[SandboxRecord]:
        return []

    def containers(self) -> list[ContainerRecord]:
        return []

    def spec(self, container_id: str) -> dict[str, Any] | None:
        return {"process": {"args": ["sleep", "1"]}, "linux": {}}

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        if container_id == "broken":
            raise PluginError("cannot update")
        self.updated.append((container_id, resources))

    async def evict(self, container_id: str, reason: str) -> None:
        self.evicted.append((container_id, reason))


def pod_rec(pid: str = "p1", **kw: Any) -> SandboxRecord:
    return SandboxRecord(
        id=pid,
        name=f"{pid}_ns_uid_0",
        meta=PodMeta(name=pid, uid="uid", namespace="ns"),
        phase=Phase.CREATING,
        **kw,
    )


def ctr_rec(cid: str, pid: str = "p1", **kw: Any) -> ContainerRecord:
    return ContainerRecord(
        id=cid, name=f"{cid}_{pid}_0", sandbox_id=pid, meta_name=cid, phase=Phase.CREATING, **kw
    )


@pytest.fixture
async def nri(tmp_path: Path) -> AsyncIterator[tuple[NriRuntime, Node, Callable[..., NriTestPlugin]]]:
    node = Node()
    cfg = NriConfig(
        socket_path=str(tmp_path / "nri.sock"),
        plugin_path=str(tmp_path / "none"),
        request_timeout=Duration(0.5),
        registration_timeout=Duration(3.0),
        cdi_spec_dirs=[str(tmp_path / "cdi")],
    )
    runtime = NriRuntime(cfg)
    runtime.bind(node)
    plugins: list[NriTestPlugin] = []

    def connect(name: str = "test", idx: str = "50", **kw: Any) -> NriTestPlugin:
        plugin = NriTestPlugin(cfg.socket_path, name, idx, **kw)
        plugins.append(plugin)
        return plugin

    await runtime.start()
    yield runtime, node, connect
    for plugin in plugins:
        await asyncio.to_thread(plugin.stop)
    await runtime.close()


async def started(plugin: NriTestPlugin) -> NriTestPlugin:
    return await asyncio.to_thread(plugin.start)


async def wait(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_lifecycle_events_reach_plugins_in_order_with_metadata(nri: Any) -> None:
    runtime, _node, connect = nri
    plugin = await started(connect())
    assert plugin.configure.runtime_name == "crib"
    assert plugin.configure.request_timeout == 500
    pod = pod_rec(ips=("10.0.0.2",))
    await runtime.pod(PodStep.RUN, pod)
    ctr = ctr_rec("c1", labels={"app": "x"})
    await runtime.adjust(ctr, {"process": {"args": ["sh"]}, "linux": {}})
    created = ContainerRecord(**{**_fields(ctr), "phase": Phase.CREATED, "pid": 42})
    await runtime.container(ContainerStep.POST_CREATE, created)
    await runtime.container(ContainerStep.START, created)
    runtime.exited(ContainerRecord(**{**_fields(created), "started_at": 1, "finished_at": 2, "exit_code": 1}))
    runtime.exited(ContainerRecord(**{**_fields(created), "finished_at": 2}))  # a second report: no event
    await runtime.container(ContainerStep.REMOVE, created)
    await runtime.pod(PodStep.STOP, pod)
    await runtime.pod(PodStep.STOP, pod)  # repeated stop: one event
    await runtime.pod(PodStep.REMOVE, pod)
    order = [
        "RunPodSandbox",
        "CreateContainer",
        "PostCreateContainer",
        "StartContainer",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
    ]
    await wait(lambda: len(plugin.events) >= len(order), "every event")
    assert [e.method for e in plugin.events] == order
    run = plugin.of("RunPodSandbox")[0].request.pod
    assert (run.name, run.namespace, run.uid, list(run.ips)) == ("p1", "ns", "uid", ["10.0.0.2"])
    stop = plugin.of("StopContainer")[0].request.container
    assert (stop.name, stop.exit_code, stop.state, stop.labels["app"]) == (
        "c1",
        1,
        api.CONTAINER_STOPPED,
        "x",
    )


def _fields(rec: Any) -> dict[str, Any]:
    return {f: getattr(rec, f) for f in rec.__dataclass_fields__}


async def test_plugins_are_asked_by_index_and_see_earlier_adjustments(nri: Any) -> None:
    runtime, _node, connect = nri
    late, early = connect("late", "90"), connect("early", "05")
    early.on(
        "CreateContainer",
        lambda _r: api.CreateContainerResponse(
            adjust=api.ContainerAdjustment(env=[api.KeyValue(key="FIRST", value="1")])
        ),
    )
    seen: list[list[str]] = []

    def second(req: Any) -> Any:
        seen.append(list(req.container.env))
        return api.CreateContainerResponse(adjust=api.ContainerAdjustment(annotations={"second": "yes"}))

    late.on("CreateContainer", second)
    await started(late)
    await started(early)
    await runtime.pod(PodStep.RUN, pod_rec())
    spec = await runtime.adjust(ctr_rec("c1"), {"process": {"env": ["PATH=/bin"]}, "linux": {}})
    assert seen == [["PATH=/bin", "FIRST=1"]]
    assert spec["process"]["env"] == ["PATH=/bin", "FIRST=1"]
    assert spec["annotations"] == {"second": "yes"}
    assert early.of("CreateContainer")[0].at < late.of("CreateContainer")[0].at


async def test_conflicting_plugins_fail_the_creation(nri: Any) -> None:
    runtime, _node, connect = nri
    for name, idx, value in (("a", "10", "1"), ("b", "20", "2")):
        p = connect(name, idx)
        p.on(
            "CreateContainer",
            lambda _r, v=value: api.CreateContainerResponse(
                adjust=api.ContainerAdjustment(env=[api.KeyValue(key="SAME", value=v)])
            ),
        )
        await started(p)
    await runtime.pod(PodStep.RUN, pod_rec())
    with pytest.raises(PluginError, match="'10-a' and '20-b' both tried to set env 'SAME'"):
        await runtime.adjust(ctr_rec("c1"), {"process": {}, "linux": {}})


async def test_a_refusal_fails_the_step_and_the_undo_reaches_plugins(nri: Any) -> None:
    runtime, _node, connect = nri
    plugin = connect()
    plugin.on("RunPodSandbox", fail("no pods today"))
    await started(plugin)
    pod = pod_rec()
    with pytest.raises(PluginError, match="test failed RunPodSandbox: no pods today"):
        await runtime.pod(PodStep.RUN, pod)
    await runtime.pod(PodStep.REMOVE, pod)  # what the lifecycle's undo does
    await wait(lambda: len(plugin.events) == 3, "the undo's events")
    assert plugin.methods() == ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"]


async def test_a_hung_plugin_is_cut_off_and_the_call_goes_on(nri: Any) -> None:
    runtime, _node, connect = nri
    hung, fine = connect("hung", "10"), connect("fine", "20")
    hung.on("CreateContainer", hang())
    await started(hung)
    await started(fine)
    await runtime.pod(PodStep.RUN, pod_rec())
    spec = await asyncio.wait_for(runtime.adjust(ctr_rec("c1"), {"process": {}, "linux": {}}), 5)
    assert spec["process"] == {}
    await asyncio.to_thread(hung.wait_disconnected)
    assert fine.connected
    assert len(fine.of("CreateContainer")) == 1
    await runtime.adjust(ctr_rec("c2"), {"process": {}, "linux": {}})
    assert len(fine.of("CreateContainer")) == 2


async def test_a_malformed_message_closes_only_that_plugin(nri: Any) -> None:
    runtime, _node, connect = nri
    bad, good = await started(connect("bad", "10")), await started(connect("good", "20"))
    await asyncio.to_thread(bad.send_raw, b"\x00\x00\x00\x01\xff\xff\xff\xff")  # an absurd frame length
    await asyncio.to_thread(bad.wait_disconnected)
    await runtime.pod(PodStep.RUN, pod_rec())
    await wait(lambda: len(good.of("RunPodSandbox")) == 1, "the good plugin's event")
    assert good.connected
    assert bad.of("RunPodSandbox") == []


async def test_a_plugin_that_disconnects_is_forgotten(nri: Any) -> None:
    runtime, _node, connect = nri
    plugin = await started(connect())
    await asyncio.to_thread(plugin.stop)
    await wait(lambda: not runtime._plugins.attached, "the plugin to be forgotten")
    await asyncio.wait_for(runtime.pod(PodStep.RUN, pod_rec()), 1)


async def test_synchronize_hands_over_existing_objects(nri: Any) -> None:
    runtime, _node, connect = nri
    await runtime.pod(PodStep.RUN, pod_rec("p1"))
    await runtime.adjust(ctr_rec("c1"), {"process": {}, "linux": {}})
    plugin = await started(connect())
    assert plugin.synced_pods == ["p1"]
    assert plugin.synced_containers == ["c1"]
    assert plugin.events == []


async def test_objects_created_during_synchronize_are_neither_lost_nor_doubled(nri: Any) -> None:
    runtime, _node, connect = nri
    first = await started(connect("first", "10"))
    await runtime.pod(PodStep.RUN, pod_rec())
    await runtime.adjust(ctr_rec("before"), {"process": {}, "linux": {}})
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def blocked(_req: Any) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(release.wait(), loop))

    second = connect("second", "20", on_synchronize=blocked)
    joining = asyncio.ensure_future(asyncio.to_thread(second.start))
    await wait(lambda: second.synced_containers == ["before"], "the second plugin's Synchronize")
    during = asyncio.ensure_future(runtime.adjust(ctr_rec("during"), {"process": {}, "linux": {}}))
    await wait(lambda: len(first.of("CreateContainer")) == 2, "the first plugin to see the new container")
    assert not during.done()  # it waits for the second plugin, which is still synchronizing
    release.set()
    await joining
    await during
    await runtime.adjust(ctr_rec("after"), {"process": {}, "linux": {}})
    created = [e.container_id for e in second.of("CreateContainer")]
    assert (second.synced_containers, created) == (["before"], ["during", "after"])


async def test_old_plugins_get_events_through_state_change(nri: Any) -> None:
    runtime, _node, connect = nri
    plugin = connect()
    plugin.on("RunPodSandbox", fail_unimplemented)
    await started(plugin)
    await runtime.pod(PodStep.RUN, pod_rec())  # does not fail: delivered through StateChange instead


def fail_unimplemented(_req: Any) -> Any:
    raise RemoteError(UNIMPLEMENTED, "unknown method")


async def test_updates_and_evictions_from_plugins(nri: Any) -> None:
    runtime, node, connect = nri
    await runtime.pod(PodStep.RUN, pod_rec())
    plugin = await started(connect())
    limit = api.LinuxResources(memory=api.LinuxMemory(limit=api.OptionalInt64(value=1 << 20)))
    failed = await asyncio.to_thread(
        plugin.update_containers,
        [
            api.ContainerUpdate(container_id="ok", linux=api.LinuxContainerUpdate(resources=limit)),
            api.ContainerUpdate(container_id="broken", linux=api.LinuxContainerUpdate(resources=limit)),
        ],
        [api.ContainerEviction(container_id="victim", reason="hog")],
    )
    assert failed == ["broken"]
    assert node.updated == [("ok", {"memory": {"limit": 1 << 20}})]
    assert node.evicted == [("victim", "evicted by NRI plugin 50-test: hog")]
    plugin.on(
        "UpdateContainer",
        lambda req: api.UpdateContainerResponse(
            update=[
                api.ContainerUpdate(
                    container_id=req.container.id, linux=api.LinuxContainerUpdate(resources=limit)
                )
            ]
        ),
    )
    await runtime.adjust(ctr_rec("c1"), {"process": {}, "linux": {}})
    applied = await runtime.update(ctr_rec("c1"), {"cpu": {"shares": 10}})
    assert applied == {"cpu": {"shares": 10}, "memory": {"limit": 1 << 20}}


async def test_registration_is_bounded_and_validated(nri: Any, tmp_path: Path) -> None:
    runtime, _node, connect = nri
    silent_r, silent_w = await asyncio.open_unix_connection(str(tmp_path / "nri.sock"))  # never registers
    plugin = connect("bad name!", "5")
    with pytest.raises(RemoteError, match="plugin name"):
        await asyncio.to_thread(plugin.start, 5.0, wait_ready=False)
    assert await asyncio.wait_for(silent_r.read(), 10) == b""  # cut after registration_timeout
    silent_w.close()
    assert runtime._plugins.attached == []


def test_nothing_of_the_protocol_loads_without_plugins(tmp_path: Path) -> None:
    code = f"""
import asyncio, sys
from crib.config import NriConfig
from crib.hooks import PodStep
from crib.nri import NriRuntime
from crib.state.records import PodMeta, SandboxRecord
class Node:
    def pods(self): return []
    def containers(self): return []
async def main():
    rt = NriRuntime(NriConfig(socket_path={str(tmp_path / "s.sock")!r}, plugin_path="/nonexistent"))
    rt.bind(Node())
    await rt.start()
    await rt.pod(PodStep.RUN, SandboxRecord(id="p", name="p", meta=PodMeta(name="p", uid="u", namespace="n")))
    await rt.close()
asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith(("crib.nri", "crib._proto.nri", "crib._proto.ttrpc"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "['crib.nri', 'crib.nri.launch', 'crib.nri.runtime']"


async def test_a_large_synchronize_is_split_and_a_plugin_that_cannot_take_it_is_closed(
    nri: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crib.nri import plugins as nri_plugins

    runtime, _node, connect = nri
    monkeypatch.setattr(nri_plugins, "SYNC_BUDGET", 120)  # a few objects per message
    pods = [f"p{i}" for i in range(6)]
    for pid in pods:
        await runtime.pod(PodStep.RUN, pod_rec(pid))
    ctrs = [f"c{i}" for i in range(6)]
    for cid in ctrs:
        await runtime.adjust(ctr_rec(cid, pods[0]), {"process": {}, "linux": {}})
    chunks: list[tuple[int, int, bool]] = []
    splitting = connect("splitting", "10")
    original = splitting._synchronize

    async def counted(req: api.SynchronizeRequest) -> api.SynchronizeResponse:
        chunks.append((len(req.pods), len(req.containers), req.more))
        return await original(req)

    splitting._synchronize = counted  # type: ignore[method-assign]
    await started(splitting)
    assert len(chunks) > 2
    assert [more for _p, _c, more in chunks] == [True] * (len(chunks) - 1) + [False]
    assert (splitting.synced_pods, splitting.synced_containers) == (pods, ctrs)  # each once, in order
    assert splitting.sync_count == 1

    naive = connect("naive", "20")

    async def whole(req: api.SynchronizeRequest) -> api.SynchronizeResponse:
        return api.SynchronizeResponse()  # answers the first part as if it were all

    naive._synchronize = whole  # type: ignore[method-assign]
    await asyncio.to_thread(naive.start, 5.0, wait_ready=False)
    await wait(lambda: not naive.connected, "the naive plugin's disconnection")
    assert [p.full_name for p in runtime._plugins.attached] == ["10-splitting"]
