"""Every crictl command of `crib` against a real daemon: images, pods, containers, logs, exec, stats.

Outputs are read as documents (-o json / -o yaml) or as the ids the commands print, never by matching
table text; configs are YAML and JSON files in crictl's snake_case form.
"""

from __future__ import annotations

import base64
import json
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.fixtures import images as img
from tests.fixtures.cri import wait_for
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.registry import TEST_PASSWORD, TEST_USERNAME
from tests.integration.cli_helpers import Cli, container_json, pod_yaml, with_busybox

ID = re.compile(r"^[0-9a-f]{64}$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _ids(text: str) -> list[str]:
    return text.split()


def test_images_pull_list_inspect_remove(crib: CribDaemon, images: img.Catalogue) -> None:
    cli = Cli(crib.endpoint)
    ref = images.reference(img.LAYERS)
    entry = images[img.LAYERS]
    pulled = cli.run("pull", ref)  # not a terminal: plain progress lines on stderr
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == f"Image is up to date for {entry.image_id}"
    layer_lines = [line for line in pulled.stderr.splitlines() if line.startswith("  layer ")]
    assert len(layer_lines) == 4
    assert all(line.endswith("bytes)") for line in layer_lines)
    assert pulled.stderr.splitlines()[-1].startswith(f"{ref}: done")
    assert cli.run("pull", "-q", ref).stderr == ""

    listed = cli.json("images")
    assert [i["id"] for i in listed["images"]] == [entry.image_id]
    assert listed["images"][0]["repoTags"] == [ref]
    assert _ids(cli.ok("images", "-q")) == [entry.image_id]
    assert _ids(cli.ok("img", "-q", "--filter", "dangling=false")) == [entry.image_id]
    assert cli.ok("images", "-q", "--filter", "reference=/nothing-like-it/") == ""
    assert cli.yaml("images", ref)["images"][0]["id"] == entry.image_id

    status = cli.yaml("inspecti", ref)
    assert status["status"]["id"] == entry.image_id
    assert status["info"]["imageSpec"]["config"]["Cmd"] == ["ls", "/layers"]
    assert "info" not in cli.json("inspecti", "-q", entry.image_id[7:20])
    templated = cli.ok("inspecti", "-o", "go-template", "--template", "{{.status.id}}", ref)
    assert templated.strip() == entry.image_id
    fs = cli.json("imagefsinfo")
    assert fs["imageFilesystems"][0]["fsId"]["mountpoint"] == str(crib.root / "layers")

    assert cli.ok("rmi", ref).splitlines() == [f"Deleted: {ref}"]
    assert cli.json("images")["images"] == []
    assert "no such image" in cli.fails("rmi", ref)


def test_pull_credentials_and_rmi_prune_all(crib: CribDaemon, images: img.Catalogue,
                                            auth_images: img.Catalogue,
                                            tmp_path: Path, session_tag: str) -> None:
    private = auth_images.reference(img.USER_NAME)
    cli = with_busybox(crib.endpoint, images.reference(img.BUSYBOX))
    assert cli.fails("pull", private).startswith("crib: UNAUTHENTICATED: ")
    assert "both --creds and --auth" in cli.fails("pull", "--creds", "a:b", "--auth", "eA==", private, code=2)
    cli.ok("pull", "-q", "--creds", f"{TEST_USERNAME}:{TEST_PASSWORD}", private)
    token = base64.b64encode(f"{TEST_USERNAME}:{TEST_PASSWORD}".encode()).decode()
    assert cli.run("pull", "-q", private, env={"CRICTL_AUTH": token}).returncode == 0
    busybox, user = images[img.BUSYBOX].image_id, auth_images[img.USER_NAME].image_id
    assert sorted(cli.ok("images", "-q").split()) == sorted([busybox, user])

    # --prune keeps what a container uses; -a removes the rest.
    ctr = container_json(tmp_path, "keeper", images.reference(img.BUSYBOX), ["sleep", "600"])
    cli.ok("run", "--no-pull", str(ctr), str(pod_yaml(tmp_path, session_tag, "keeper")))
    assert cli.ok("rmi", "--prune").splitlines() == [f"Deleted: {private}"]
    assert cli.ok("images", "-q").split() == [busybox]
    cli.ok("rmp", "-f", "-a")
    cli.ok("rm", "-a")
    assert cli.ok("rmi", "-a").splitlines() == [f"Deleted: {images.reference(img.BUSYBOX)}"]
    assert cli.ok("images", "-q") == ""


def test_pod_and_container_lifecycle(crib: CribDaemon, images: img.Catalogue, tmp_path: Path,
                                     session_tag: str) -> None:
    busybox = images.reference(img.BUSYBOX)
    cli = with_busybox(crib.endpoint, busybox)
    pod_file = pod_yaml(tmp_path, session_tag, "web-pod", labels={"app": "web"})
    pod = cli.ok("runp", str(pod_file)).strip()
    assert ID.match(pod)

    pods = cli.json("pods")["items"]
    assert [(p["id"], p["metadata"]["name"], p["state"]) for p in pods] == [(pod, "web-pod", "SANDBOX_READY")]
    assert _ids(cli.ok("pods", "-q", "--name", "^web")) == [pod]
    assert _ids(cli.ok("pods", "-q", "--label", "app=web", "--namespace", "crib-test")) == [pod]
    assert cli.ok("pods", "-q", "--state", "notready") == ""
    assert cli.yaml("pods", "--id", pod[:8])["items"][0]["id"] == pod
    status = cli.json("inspectp", pod)
    assert status["status"]["state"] == "SANDBOX_READY"
    assert RFC3339.match(status["status"]["createdAt"])
    name = cli.ok("inspectp", "-o", "go-template", "--template", "{{.status.metadata.name}}", pod)
    assert name == "web-pod\n"

    web_file = container_json(tmp_path, "web", busybox,
                              ["sh", "-c", "echo out-1; echo err-1 >&2; exec sleep 600"],
                              envs=[{"key": "GREETING", "value": "hello from crib"}],
                              labels={"tier": "front"})
    web = cli.ok("create", pod, str(web_file), str(pod_file)).strip()
    assert ID.match(web)
    assert cli.ok("ps", "-q") == ""  # created, not running
    assert cli.json("ps", "-a")["containers"][0]["state"] == "CONTAINER_CREATED"
    assert cli.ok("start", web).strip() == web
    job_file = container_json(tmp_path, "job", busybox, ["sh", "-c", "echo done; exit 7"])
    job = cli.ok("create", pod, str(job_file), str(pod_file)).strip()
    cli.ok("start", job)
    wait_for(lambda: _ids(cli.ok("ps", "-q", "--state", "exited")) == [job], timeout=20, what="job to exit")

    assert [c["id"] for c in cli.yaml("ps")["containers"]] == [web]
    assert _ids(cli.ok("ps", "-q", "--name", "^we")) == [web]
    assert _ids(cli.ok("ps", "-q", "--label", "tier=front")) == [web]
    assert _ids(cli.ok("ps", "-q", "--latest")) == [job]
    assert _ids(cli.ok("ps", "-q", "--last", "2")) == [job, web]
    assert sorted(_ids(cli.ok("ps", "-q", "-a", "--pod", pod))) == sorted([web, job])
    assert _ids(cli.ok("ps", "-q", "--image", busybox)) == [web]

    st = cli.json("inspect", web)
    assert st["status"]["state"] == "CONTAINER_RUNNING"
    assert RFC3339.match(st["status"]["startedAt"])
    assert st["status"]["finishedAt"] == "0001-01-01T00:00:00Z"
    assert st["status"]["labels"] == {"tier": "front"}
    done = cli.json("inspect", job)["status"]
    assert (done["state"], done["exitCode"]) == ("CONTAINER_EXITED", 7)
    both = cli.json("inspect", "-a", "--pod", pod)
    assert sorted(d["status"]["id"] for d in both) == sorted([web, job])

    wait_for(lambda: "err-1" in cli.run("logs", web).stderr, timeout=20, what="web's log")
    out = cli.run("logs", web)
    assert (out.stdout, out.stderr) == ("out-1\n", "err-1\n")
    assert cli.run("logs", "--stream", "stderr", web).stdout == ""
    assert cli.run("logs", "--tail", "1", web).stderr == "err-1\n"
    stamped = cli.ok("logs", "-t", job)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) done\n", stamped), stamped
    assert cli.ok("logs", "--since", "1m", job) == "done\n"
    assert cli.ok("logs", "--since", "2100-01-01T00:00:00Z", job) == ""
    assert cli.ok("logs", "-f", job) == "done\n"  # follow ends: the container has exited
    assert "previous terminated container job not found" in cli.fails("logs", "-p", job)

    ran = cli.run("exec", "-s", web, "sh", "-c", "echo $GREETING; echo oops >&2; exit 4")
    assert (ran.returncode, ran.stdout, ran.stderr) == (4, "hello from crib\n", "oops\n")
    assert cli.ok("exec", "-s", "--name", "^web$", "ls", "-d", "/proc") == "/proc\n"

    assert cli.ok("update", "--memory", str(64 << 20), web).strip() == web
    limits = cli.json("inspect", web)["status"]["resources"]["linux"]
    assert int(limits["memoryLimitInBytes"]) == 64 << 20

    stats = cli.json("stats", "-a")["stats"]
    assert {s["attributes"]["id"] for s in stats} == {web, job}
    web_stats = next(s for s in stats if s["attributes"]["id"] == web)
    assert int(web_stats["cpu"]["usageCoreNanoSeconds"]["value"]) > 0
    assert cli.json("stats", web)["stats"][0]["attributes"]["metadata"]["name"] == "web"
    assert cli.json("statsp")["stats"][0]["attributes"]["id"] == pod
    assert cli.yaml("statsp", pod)["stats"][0]["attributes"]["metadata"]["name"] == "web-pod"

    descriptors = {d["name"]: d["labelKeys"] for d in cli.json("metricdescs")["descriptors"]}
    assert descriptors["container_memory_working_set_bytes"][:3] == ["id", "name", "image"]
    assert {d["name"] for d in cli.yaml("metricdescs")["descriptors"]} == set(descriptors)
    pod_metrics = next(p for p in cli.json("metricsp")["podMetrics"] if p["podSandboxId"] == pod)
    web_metrics = next(c for c in pod_metrics["containerMetrics"] if c["containerId"] == web)["metrics"]
    for metric in web_metrics:  # every reading is described, with one value per label key
        assert len(metric["labelValues"]) == len(descriptors[metric["name"]]), metric
    memory = next(m for m in web_metrics if m["name"] == "container_memory_working_set_bytes")
    assert int(memory["value"]["value"]) > 0
    assert memory["labelValues"][1] == "web"
    as_yaml = next(p for p in cli.yaml("metricsp")["podMetrics"] if p["podSandboxId"] == pod)
    assert {c["containerId"] for c in as_yaml["containerMetrics"]} == {web}
    table = cli.ok("metricsp", "-o", "table").splitlines()
    assert table[0].split() == ["POD", "CONTAINER", "METRIC", "TYPE", "LABELS", "VALUE"]
    counted = sum(len(p["metrics"]) + sum(len(c["metrics"]) for c in p["containerMetrics"])
                  for p in cli.json("metricsp")["podMetrics"])
    assert len(table) - 1 == counted  # one line per metric
    assert len(cli.ok("metricdescs", "-o", "table").splitlines()) == len(descriptors) + 1

    assert "is running, stop it first" in cli.fails("rm", web)
    job_log = Path(done["logPath"])
    assert job_log.exists()
    assert cli.ok("rm", job).strip() == job
    assert not job_log.exists()  # rm removes the log, as crictl's does (-k keeps it)
    assert cli.ok("stop", "-t", "1", web).strip() == web
    assert cli.ok("rm", "-k", web).strip() == web
    assert cli.json("ps", "-a")["containers"] == []
    assert "is ready, stop it first" in cli.fails("rmp", pod)
    assert cli.ok("stopp", pod).strip() == f"Stopped sandbox {pod}"
    assert cli.ok("rmp", pod).strip() == f"Removed sandbox {pod}"

    # run = runp + create + start; rmp -f -a stops and removes every pod.
    second = pod_yaml(tmp_path, session_tag, "run-pod")
    ran_id = cli.ok("run", "--no-pull", str(web_file), str(second)).strip()
    assert cli.json("inspect", ran_id)["status"]["state"] == "CONTAINER_RUNNING"
    assert len(cli.json("pods")["items"]) == 1
    cli.ok("rmp", "-f", "-a")
    assert cli.json("pods")["items"] == []


def test_run_pulls_with_progress_and_stop_all(crib: CribDaemon, images: img.Catalogue, tmp_path: Path,
                                              session_tag: str) -> None:
    cli = Cli(crib.endpoint)
    ref = images.reference(img.BUSYBOX)
    ctr = container_json(tmp_path, "sleeper", ref, ["sleep", "600"])
    ran = cli.run("run", str(ctr), str(pod_yaml(tmp_path, session_tag, "pulled")))
    assert ran.returncode == 0, ran.stderr
    assert f"{ref}: done" in ran.stderr  # pulled first, progress on stderr
    cid = ran.stdout.strip()
    assert _ids(cli.ok("ps", "-q")) == [cid]
    assert cli.ok("stop", "-a").strip() == cid
    assert cli.ok("stop", "-a").strip() == "No running containers found."
    assert cli.ok("rm", "-a").strip() == cid
    cli.ok("rmp", "-f", "-a")
    assert cli.json("pods")["items"] == []


def test_events_follow_container_changes(crib: CribDaemon, images: img.Catalogue, tmp_path: Path,
                                         session_tag: str) -> None:
    ref = images.reference(img.BUSYBOX)
    cli = with_busybox(crib.endpoint, ref)
    pod_file = pod_yaml(tmp_path, session_tag, "watched")
    pod = cli.ok("runp", str(pod_file)).strip()
    argv = [sys.executable, "-m", "crib", "-r", crib.endpoint, "events"]
    watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: queue.Queue[dict[str, Any]] = queue.Queue()

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            events.put(json.loads(line))  # one JSON object per line

    threading.Thread(target=read, daemon=True).start()
    try:
        # The stream is live once it reports any probe container (nothing marks the moment it subscribes);
        # a probe's event may come after the next probe is made, so any of them will do.
        # Each probe has its own name: a second create of one name answers the existing container (kubelet's
        # retry semantics) and publishes nothing, so a missed first event would never be repeated.
        probes: set[str] = set()
        live = False
        for attempt in range(20):
            probes.add(cli.ok("create", pod, str(container_json(tmp_path, f"probe-{attempt}", ref, ["true"])),
                              str(pod_file)).strip())
            try:
                live = events.get(timeout=3)["containerId"] in probes
            except queue.Empty:
                assert watcher.poll() is None, watcher.stderr.read() if watcher.stderr else "events ended"
            if live:
                break
        assert live, "crib events reported none of 20 probe containers"
        blip = container_json(tmp_path, "blip", ref, ["true"])
        cid = cli.ok("create", pod, str(blip), str(pod_file)).strip()
        cli.ok("start", cid)
        seen: list[str] = []
        while "CONTAINER_STOPPED_EVENT" not in seen:
            event = events.get(timeout=30)
            if event["containerId"] == cid:
                seen.append(event["containerEventType"])
                assert event["podSandboxStatus"]["id"] == pod
        assert seen == ["CONTAINER_CREATED_EVENT", "CONTAINER_STARTED_EVENT", "CONTAINER_STOPPED_EVENT"]
    finally:
        watcher.terminate()
        watcher.wait(10)
        cli.ok("rmp", "-f", pod)
