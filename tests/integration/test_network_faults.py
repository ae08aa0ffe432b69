"""Pod networking under failure, through a real daemon: a plugin failing mid-chain on ADD and on DEL, the
daemon killed during ADD and restarted, cache entries of pods the daemon no longer knows, and 200 pod
create/remove cycles. After each: no netns files, no host-local leases, no veths, no iptables rules of the
removed pods (bed.leaks), no cache entries, and the crib_factory leak check on the daemon's files and pins.

The failures come from the failpoint plugin (tests/fixtures/cni_failpoint.py) wrapping the real portmap.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed, pin_netns, unpin_netns
from tests.fixtures.cri import Pod, code_of, container_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon
from tests.integration.net_helpers import (
    cache_entries,
    daemon_on,
    free_port,
    is_pinned_netns,
    pod_config,
    pod_ips,
    pod_state,
    remove_pod,
    run_pod,
)


def _failpoint(**fp: Any) -> dict[str, Any]:
    """portmap, wrapped by the failpoint plugin configured with fp."""
    return {"type": "failpoint", "capabilities": {"portMappings": True},
            "failpoint": {"delegate": "portmap", **fp}}


def _ports() -> list[api.PortMapping]:
    return [api.PortMapping(protocol=api.TCP, container_port=80, host_port=free_port())]


def _listed(daemon: CribDaemon) -> list[str]:
    return [p.id for p in daemon.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items]


def test_a_plugin_failing_mid_chain_fails_the_pod_and_leaves_nothing(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str) -> None:
    # portmap ran (its DNAT rules exist) before the failpoint fails: the undo's DEL must remove them.
    failing = _failpoint(fail=["ADD"], when="after", code=123, msg="portmap refused",
                         stderr="failpoint: the stderr line")
    bed.write_conflist([bed.bridge_plugin(), failing, {"type": "loopback"}])
    daemon = daemon_on(crib_factory, bed)
    code, details = code_of(lambda: run_pod(daemon, bed, pod_config(session_tag, ports=_ports())))
    assert code == grpc.StatusCode.UNKNOWN
    assert "CNI plugin failpoint failed ADD" in details
    assert "(code 123): portmap refused" in details
    assert "[stderr: failpoint: the stderr line]" in details
    assert "the partial attachment was removed (DEL ran)" in details
    assert _listed(daemon) == []
    assert cache_entries(daemon) == []
    assert list((daemon.runroot / "netns").iterdir()) == []
    assert bed.leaks() == []


def test_a_del_failure_keeps_the_namespace_pinned_until_del_succeeds(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str,
        images: img.Catalogue) -> None:
    """bridge can only remove its ipMasq rule while the pod's addresses exist: a failed DEL must not unpin."""
    failing = bed.tmp / "del-fails"
    failing.touch()
    refusing = _failpoint(fail=["DEL"], when="before", while_exists=str(failing), msg="DEL refused")
    bed.write_conflist([bed.bridge_plugin(), refusing, {"type": "loopback"}])
    daemon = daemon_on(crib_factory, bed)
    busybox = images.reference(img.BUSYBOX)
    pull(daemon, busybox)
    pod = Pod(daemon, pod_config(session_tag, ports=_ports()))
    bed.sandbox_ids.append(pod.id)
    netns = daemon.runroot / "netns" / pod.id
    cid = pod.run(container_config(busybox, command=["sleep", "1000"]))
    ips = pod_ips(daemon, pod.id)

    try:
        stop = api.StopPodSandboxRequest(pod_sandbox_id=pod.id)
        code, details = code_of(lambda: daemon.runtime.StopPodSandbox(stop, timeout=60))
        assert code == grpc.StatusCode.UNKNOWN
        assert "DEL refused" in details
        assert pod.status(cid).state == api.CONTAINER_EXITED  # containers go first, whatever DEL does
        assert pod_state(daemon, pod.id) == api.SANDBOX_NOTREADY
        assert is_pinned_netns(netns)
        assert len(cache_entries(daemon)) == 1
        assert bed.leaks(ips), "the failed DEL gave nothing back yet"

        remove = api.RemovePodSandboxRequest(pod_sandbox_id=pod.id)
        code, _ = code_of(lambda: daemon.runtime.RemovePodSandbox(remove, timeout=60))
        assert code == grpc.StatusCode.UNKNOWN
        assert is_pinned_netns(netns)
        daemon.restart()  # the half-removed pod survives a restart as it was: pinned, DEL still owed
        assert pod.id in _listed(daemon)
        assert is_pinned_netns(netns)
        assert len(cache_entries(daemon)) == 1

        failing.unlink()
        daemon.runtime.RemovePodSandbox(remove, timeout=60)
        assert _listed(daemon) == []
        assert not netns.exists()
        assert cache_entries(daemon) == []
    finally:  # a failed assertion above must not leave the pod pinned
        failing.unlink(missing_ok=True)
        pod.remove()
    assert bed.leaks(ips) == []  # the ipMasq rule included


def test_add_and_its_undo_both_failing_keep_the_pod_notready_until_remove_releases_it(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str) -> None:
    """A failed ADD whose DEL fails too: unpinning then would strand bridge's ipMasq rule for good, so the
    pod stays (NOTREADY, namespace pinned) for kubelet's RemovePodSandbox to finish."""
    failing = bed.tmp / "plugin-fails"
    failing.touch()
    broken = _failpoint(fail=["ADD", "DEL"], when="after", while_exists=str(failing), msg="portmap is broken")
    bed.write_conflist([bed.bridge_plugin(), broken, {"type": "loopback"}])
    daemon = daemon_on(crib_factory, bed)
    config = pod_config(session_tag, ports=_ports())
    code, details = code_of(lambda: run_pod(daemon, bed, config))
    assert code == grpc.StatusCode.UNKNOWN
    assert "failpoint failed ADD" in details
    assert "undoing it with DEL failed too" in details
    (sid,) = _listed(daemon)
    bed.sandbox_ids.append(sid)
    assert f"pod {sid} is kept NOTREADY with its network namespace until RemovePodSandbox" in details
    try:
        assert pod_state(daemon, sid) == api.SANDBOX_NOTREADY
        assert is_pinned_netns(daemon.runroot / "netns" / sid)
        assert len(cache_entries(daemon)) == 1
        assert not (daemon.runroot / "sandboxes" / sid).exists()  # everything else was undone
        assert bed.leaks(), "bridge's address and masquerade rule are still owed a DEL"
        _remove_once_del_works(daemon, bed, sid, failing)
    finally:
        failing.unlink(missing_ok=True)
        remove_pod(daemon, sid)


def _remove_once_del_works(daemon: CribDaemon, bed: Testbed, sid: str, failing: Path) -> None:
    """DEL works again: RemovePodSandbox releases everything the pod still held."""
    failing.unlink()
    daemon.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
    assert _listed(daemon) == []
    assert cache_entries(daemon) == []
    assert bed.leaks() == []


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def _killed_during_add(daemon: CribDaemon, bed: Testbed, config: api.PodSandboxConfig, marker: Path) -> str:
    """RunPodSandbox, the daemon SIGKILLed while the stalling plugin runs its ADD; the pod's id (the bed
    tracks it), once the orphaned plugin has finished (portmap's DNAT rules then exist)."""
    call = daemon.runtime.RunPodSandbox.future(api.RunPodSandboxRequest(config=config), timeout=60)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "ADD never reached the stalling plugin:\n" + daemon.log_tail()
        time.sleep(0.02)
    daemon.kill()
    with pytest.raises(grpc.RpcError):
        call.result()
    cached = cache_entries(daemon)
    assert len(cached) == 1  # the intent was recorded before the first plugin ran
    sid = str(json.loads((daemon.root / "cni" / "results" / cached[0]).read_bytes())["containerId"])
    bed.sandbox_ids.append(sid)
    assert is_pinned_netns(daemon.runroot / "netns" / sid)
    plugin_pid = int(marker.read_text())
    while not _gone(plugin_pid):
        time.sleep(0.05)
    return sid


def test_daemon_killed_during_add_cleans_up_after_restart(crib_factory: Callable[..., CribDaemon],
                                                          bed: Testbed, session_tag: str) -> None:
    marker = bed.tmp / "stalled"
    bed.write_conflist([bed.bridge_plugin(), _failpoint(stall={"command": "ADD", "marker": str(marker),
                                                               "seconds": 2}),
                        {"type": "loopback"}])
    daemon = daemon_on(crib_factory, bed)
    config = pod_config(session_tag, ports=_ports())
    sid = _killed_during_add(daemon, bed, config, marker)
    daemon.start()
    # The restart undid the pod cut half-way: DEL ran with the cached config and partial result, while the
    # namespace was still pinned, and then the namespace went.
    assert _listed(daemon) == []
    assert cache_entries(daemon) == []
    assert bed.leaks() == []
    assert not (daemon.runroot / "netns" / sid).exists()
    # And the same pod, asked again, now runs (the stall only delays it).
    marker.unlink()
    sid = run_pod(daemon, bed, config)
    ips = pod_ips(daemon, sid)
    remove_pod(daemon, sid)
    assert bed.leaks(ips) == []


def test_a_pod_cut_by_a_crash_whose_del_fails_at_restart_is_kept_notready_for_removal(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str) -> None:
    """Once, a pod left CREATING by a crash whose undo (DEL) failed at restart stayed hidden, holding its
    namespaces and network, until some later restart. Now it is listed NOTREADY and removable."""
    marker, failing = bed.tmp / "stalled", bed.tmp / "del-fails"
    stalling = _failpoint(stall={"command": "ADD", "marker": str(marker), "seconds": 2}, fail=["DEL"],
                          when="before", while_exists=str(failing), msg="DEL refused")
    bed.write_conflist([bed.bridge_plugin(), stalling, {"type": "loopback"}])
    daemon = daemon_on(crib_factory, bed)
    sid = _killed_during_add(daemon, bed, pod_config(session_tag, ports=_ports()), marker)
    failing.touch()
    try:
        daemon.start()
        assert _listed(daemon) == [sid]
        assert pod_state(daemon, sid) == api.SANDBOX_NOTREADY
        assert is_pinned_netns(daemon.runroot / "netns" / sid)  # kept for the DEL still owed
        daemon.wait_for_log("pod creation cut by a restart could not be undone; pod kept NOTREADY")
        code, details = code_of(lambda: daemon.runtime.RemovePodSandbox(
            api.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60))
        assert code == grpc.StatusCode.UNKNOWN
        assert "DEL refused" in details
        assert _listed(daemon) == [sid]
        _remove_once_del_works(daemon, bed, sid, failing)
    finally:
        failing.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)


def test_a_failed_pod_hands_a_parent_cgroup_it_made_to_the_pod_living_under_it(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str) -> None:
    """Pod A makes the shared parent /<tag>/shared-x and fails later (its ADD); pod B was created under that
    parent meanwhile. Once, A's undo tried to remove the parent (busy with B), gave up, and nobody removed
    it after B; now the parent passes to B and goes with it."""
    marker, stall, failing = bed.tmp / "stalled", bed.tmp / "stall", bed.tmp / "fail"
    plugin = _failpoint(stall={"command": "ADD", "marker": str(marker), "seconds": 10,
                               "while_exists": str(stall)},
                        fail=["ADD"], when="before", while_exists=str(failing), msg="ADD refused")
    bed.write_conflist([bed.bridge_plugin(), plugin, {"type": "loopback"}])
    daemon = daemon_on(crib_factory, bed)
    shared = f"/{session_tag}/shared-{uuid.uuid4().hex[:6]}"
    first, second = pod_config(session_tag), pod_config(session_tag)
    first.linux.cgroup_parent, second.linux.cgroup_parent = f"{shared}/a", f"{shared}/b"
    stall.touch()
    call = daemon.runtime.RunPodSandbox.future(api.RunPodSandboxRequest(config=first), timeout=60)
    wait_for(marker.exists, timeout=30, what="A's ADD to stall")  # A made the parent, now waits in ADD
    stall.unlink()
    sid = run_pod(daemon, bed, second)  # B, under the same parent, while A waits
    failing.touch()  # A's ADD fails when its stall ends
    with pytest.raises(grpc.RpcError) as info:
        call.result()
    assert "ADD refused" in (info.value.details() or "")
    failing.unlink()
    assert Path(f"/sys/fs/cgroup/memory{shared}").is_dir()  # B lives there
    remove_pod(daemon, sid)
    assert not Path(f"/sys/fs/cgroup/memory{shared}").exists()  # and the parent went with B
    assert bed.leaks() == []


def test_attachments_of_pods_gone_from_the_state_are_deleted_at_start(
        crib_factory: Callable[..., CribDaemon], bed: Testbed, session_tag: str) -> None:
    """A cache entry whose pod crib no longer knows (a wiped state.db, a hand-made entry) is DELeted."""
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    sid = run_pod(daemon, bed, pod_config(session_tag, ports=_ports()))
    ips = pod_ips(daemon, sid)
    entry = next((daemon.root / "cni" / "results").iterdir()).read_bytes()
    remove_pod(daemon, sid)
    daemon.stop()
    # Replay the attachment outside crib's knowledge: ADD again by hand, and leave its cache entry.
    netns = pin_netns(bed.tmp / "netns" / "orphan")
    try:
        doc = json.loads(entry)
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": sid, "CNI_NETNS": str(netns), "CNI_IFNAME": "eth0",
               "CNI_PATH": ":".join(bed.plugin_dirs), "PATH": os.environ["PATH"]}
        conf = json.loads(base64.b64decode(doc["config"]))
        bridge = dict(conf["plugins"][0], cniVersion="1.0.0", name=conf["name"])
        subprocess.run(["/usr/lib/cni/bridge"], input=json.dumps(bridge).encode(), env=env, check=True,
                       capture_output=True, timeout=30)
        assert bed.leaks(ips), "the replayed ADD should hold an address"
        doc["netns"] = str(netns)
        (daemon.root / "cni" / "results" / f"{bed.network}-{sid}-eth0").write_text(json.dumps(doc))
        daemon.start()
        daemon.wait_for_log("removed the network attachment of a pod that is gone")
        assert cache_entries(daemon) == []
        assert bed.leaks(ips) == []
    finally:
        unpin_netns(netns)


@pytest.mark.slow
def test_200_pod_cycles_leak_nothing(crib_factory: Callable[..., CribDaemon], bed: Testbed,
                                     session_tag: str) -> None:
    bed.write_conflist()
    daemon = daemon_on(crib_factory, bed)
    pool = [free_port() for _ in range(5)]
    seen: set[str] = set()
    for i in range(200):
        # hostPorts come and go in a small set, so a rule (or a reservation) left by one pod would collide
        # with a later one.
        ports = [api.PortMapping(protocol=api.TCP, container_port=80, host_port=pool[i % 5])]
        if i % 2:
            ports = []
        sid = run_pod(daemon, bed, pod_config(session_tag, ports=ports))
        seen.update(pod_ips(daemon, sid))
        remove_pod(daemon, sid)
    assert len(seen) > 1  # addresses were handed out and given back, not one pod's worth
    assert bed.leaks(seen) == []
    assert cache_entries(daemon) == []
    assert sorted(os.listdir(daemon.runroot / "netns")) == []
