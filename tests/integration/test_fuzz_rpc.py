"""Fuzzing every RPC through a real daemon: requests generated from the proto descriptors, and raw frames.

For each example a random RPC of either service gets a generated request (tests/fixtures/fuzz.py) or a
frame of bytes that may not parse at all. The daemon must answer every one: never die, never answer
INTERNAL (a bug) for bad input, and afterwards leak nothing (the crib_factory leak check, after every pod
is removed) and have written nothing outside its roots (no file named like the fuzzer's trap anywhere it
could have escaped to).

The run is bounded for `make test` (CRIB_FUZZ_EXAMPLES, default 120 generated requests and 120 raw
frames); `make fuzz` runs more. The tally of (RPC, status code) is printed at the end.
"""

from __future__ import annotations

import collections
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, container_config, pod_config, pull
from tests.fixtures.daemon import CribDaemon
from tests.fixtures.fuzz import RequestStrategies, Targets, methods, trap_hits

EXAMPLES = int(os.environ.get("CRIB_FUZZ_EXAMPLES", "120"))
CALL_TIMEOUT = 60.0
STREAM_TIMEOUT = 2.0  # GetContainerEvents never ends on its own
HOST_DIRS = [Path(p) for p in ("/", "/tmp", "/etc", "/var", "/var/lib", "/var/log", "/run")]
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                     suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink),
                     print_blob=True)


def _call(crib: CribDaemon, service: str, method: Any, payload: bytes) -> tuple[grpc.StatusCode, str]:
    path = f"/runtime.v1.{service}/{method.name}"
    try:
        if method.server_streaming:
            for _ in crib.channel.unary_stream(path)(payload, timeout=STREAM_TIMEOUT):
                pass
        else:
            crib.channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _check(crib: CribDaemon, tally: collections.Counter[tuple[str, str]], method: Any,
           code: grpc.StatusCode, details: str) -> None:
    tally[(method.name, code.name)] += 1
    assert crib.proc is not None
    assert crib.proc.poll() is None, "the daemon died:\n" + crib.log_tail()
    assert code != grpc.StatusCode.INTERNAL, f"{method.name} answered INTERNAL: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        assert method.server_streaming, f"{method.name} did not answer within {CALL_TIMEOUT}s"
    if code not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED):
        assert details, f"{method.name} answered {code.name} without saying why"


def _remove_everything(crib: CribDaemon) -> None:
    rt = crib.runtime
    for pod in rt.ListPodSandbox(api.ListPodSandboxRequest(), timeout=30).items:
        rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=120)
        rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=120)
    assert not rt.ListContainers(api.ListContainersRequest(), timeout=30).containers


@pytest.fixture
def fuzzed(crib_factory: Callable[..., CribDaemon], images: img.Catalogue, session_tag: str,
           tmp_path: Path) -> Any:
    """A daemon with a pulled image, one pod and one running container for the requests to aim at."""
    crib = crib_factory()
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    logs, data = tmp_path / "fuzz" / "logs", tmp_path / "fuzz" / "data"
    logs.mkdir(parents=True)
    data.mkdir()
    pod = Pod(crib, pod_config(session_tag, log_dir=logs))
    sleeper = container_config(busybox, "target", command=["sleep", "1000"])
    cid = pod.run(sleeper)
    bases = {
        "RunPodSandbox": api.RunPodSandboxRequest(config=pod_config(session_tag, log_dir=logs)),
        "CreateContainer": api.CreateContainerRequest(pod_sandbox_id=pod.id, config=sleeper,
                                                      sandbox_config=pod.config),
        "ExecSync": api.ExecSyncRequest(container_id=cid, cmd=["echo", "hello"], timeout=5),
        "UpdateContainerResources": api.UpdateContainerResourcesRequest(
            container_id=cid, linux=api.LinuxContainerResources(cpu_shares=512)),
        "PullImage": api.PullImageRequest(image=api.ImageSpec(image=busybox)),
    }
    targets = Targets(log_dirs=[str(logs)], host_paths=[str(data)], images=[busybox],
                      cgroup_parents=["", f"/{session_tag}/fuzz-a", f"/{session_tag}/fuzz-b"],
                      registry=busybox.split("/", 1)[0], pod_ids=[pod.id], container_ids=[cid], bases=bases)
    tally: collections.Counter[tuple[str, str]] = collections.Counter()
    yield crib, RequestStrategies(targets), methods(), tally
    print("\n(RPC, code) tally:", dict(sorted(tally.items())))
    _remove_everything(crib)
    assert trap_hits([*HOST_DIRS, tmp_path], exclude=[crib.root, crib.runroot, logs]) == []
    log = crib.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "unexpected error" not in log


def test_every_rpc_answers_generated_requests(fuzzed: Any) -> None:
    crib, strategies, everything, tally = fuzzed

    @_SETTINGS
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        service, method = data.draw(st.sampled_from(everything), label="rpc")
        request = data.draw(strategies.request_for(method), label="request")
        _check(crib, tally, method, *_call(crib, service, method, request.SerializeToString()))

    one()
    assert sum(tally.values()) >= EXAMPLES


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    """A valid request's bytes, damaged: truncated, bit-flipped, spliced with noise, or length-bombed."""
    kind = rng.randrange(4)
    if kind == 0 and raw:
        return raw[:rng.randrange(len(raw))]
    if kind == 1 and raw:
        out = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 2:
        cut = rng.randrange(len(raw) + 1)
        return raw[:cut] + rng.randbytes(rng.randint(1, 64)) + raw[cut:]
    return b"\x0a\xff\xff\xff\xff\x0f" + raw  # field 1 claims 4 GiB


def test_every_rpc_answers_corrupt_frames(fuzzed: Any) -> None:
    """Bytes that are not the request message (noise, or a valid request damaged): INVALID_ARGUMENT when
    they do not parse, and no worse than any other bad request when they happen to."""
    crib, strategies, everything, tally = fuzzed

    @_SETTINGS
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        service, method = data.draw(st.sampled_from(everything), label="rpc")
        if data.draw(st.booleans(), label="noise"):
            payload = data.draw(st.binary(min_size=1, max_size=2048), label="payload")
        else:
            valid = data.draw(strategies.request_for(method), label="request").SerializeToString()
            payload = _mutate(valid, random.Random(data.draw(st.integers(0, 2**32), label="seed")))
        try:
            method_class(method).FromString(payload)
            parses = True
        except Exception:
            parses = False
        code, details = _call(crib, service, method, payload)
        _check(crib, tally, method, code, details)
        if not parses:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (method.name, code, details)

    one()


def method_class(method: Any) -> Any:
    return getattr(api, method.input_type.name)


# What the fuzzers found, kept as fixed examples (method, request, the code it must answer, and words of
# the message).
FOUND = [
    # A registry token that cannot be an HTTP header value: INTERNAL (UnicodeEncodeError in the HTTP
    # client) for a non-ASCII character, UNKNOWN (the registry's 400) for a control character.
    ("PullImage", lambda image: api.PullImageRequest(image=api.ImageSpec(image=image),
                                                     auth=api.AuthConfig(registry_token="tok\x80en")),
     grpc.StatusCode.INVALID_ARGUMENT, "registry token"),
    ("PullImage", lambda image: api.PullImageRequest(image=api.ImageSpec(image=image),
                                                     auth=api.AuthConfig(registry_token="tok\x7fen")),
     grpc.StatusCode.INVALID_ARGUMENT, "registry token"),
    # An auth field with a non-ASCII character: INTERNAL (ValueError out of base64).
    ("PullImage", lambda image: api.PullImageRequest(image=api.ImageSpec(image=image),
                                                     auth=api.AuthConfig(auth="\x81bWU6cw==")),
     grpc.StatusCode.INVALID_ARGUMENT, "the auth field is not base64"),
]


@pytest.mark.parametrize(("name", "build", "expected", "says"), FOUND, ids=[f[3] for f in FOUND])
def test_what_the_fuzzers_found_stays_fixed(crib: CribDaemon, busybox: str, name: str,
                                            build: Callable[[str], Any], expected: grpc.StatusCode,
                                            says: str) -> None:
    stub = crib.images if hasattr(crib.images, name) else crib.runtime
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, name)(build(busybox), timeout=30)
    assert caught.value.code() == expected, caught.value.details()
    assert says in (caught.value.details() or "")
    assert "Traceback" not in crib.log_path.read_text(errors="replace")
