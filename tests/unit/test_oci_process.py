"""The container process: Kubernetes args rules, environment merge, working dir, tty, exec process.json."""

from __future__ import annotations

from typing import Any

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.errors import InvalidArgument
from crib.oci import DEFAULT_PATH, build_container_spec, exec_process
from crib.oci.process import process_args, process_env, working_dir
from crib.state.records import ImageConfig
from tests.unit.test_oci_inputs import container_config, container_inputs

# (id, image entrypoint, image cmd, CRI command, CRI args, expected argv)
ARGS = [
    ("image-only", ("/ep", "-x"), ("cmd", "1"), (), (), ["/ep", "-x", "cmd", "1"]),
    ("image-cmd-only", (), ("sh", "-c", "true"), (), (), ["sh", "-c", "true"]),
    ("image-entrypoint-only", ("/ep",), (), (), (), ["/ep"]),
    ("args-replace-cmd", ("/ep",), ("cmd",), (), ("a", "b"), ["/ep", "a", "b"]),
    ("args-without-entrypoint", (), ("cmd",), (), ("a", "b"), ["a", "b"]),
    ("command-drops-entrypoint-and-cmd", ("/ep",), ("cmd",), ("/bin/run",), (), ["/bin/run"]),
    ("command-and-args", ("/ep",), ("cmd",), ("/bin/run", "-v"), ("x",), ["/bin/run", "-v", "x"]),
    ("empty-string-entrypoint-is-none", ("",), ("cmd",), (), (), ["cmd"]),
]


@pytest.mark.parametrize(("entrypoint", "cmd", "command", "args", "expected"),
                         [row[1:] for row in ARGS], ids=[row[0] for row in ARGS])
def test_args_kubernetes_rules(entrypoint: tuple[str, ...], cmd: tuple[str, ...], command: tuple[str, ...],
                               args: tuple[str, ...], expected: list[str]) -> None:
    config = container_config(command=command, args=list(args))
    image = ImageConfig(entrypoint=entrypoint, cmd=cmd)
    assert process_args(config, image, container="app") == expected
    assert build_container_spec(container_inputs(config, image=image))["process"]["args"] == expected


@pytest.mark.parametrize(("entrypoint", "cmd", "command"), [
    ((), (), ()),
    (("",), (), ()),
    ((), (), ("",)),
], ids=["nothing-at-all", "empty-entrypoint-no-cmd", "empty-program"])
def test_args_empty_is_invalid(entrypoint: tuple[str, ...], cmd: tuple[str, ...],
                               command: tuple[str, ...]) -> None:
    config = container_config(command=command)
    with pytest.raises(InvalidArgument, match="container 'app'"):
        process_args(config, ImageConfig(entrypoint=entrypoint, cmd=cmd), container="app")


def _env(*pairs: tuple[str, bytes]) -> list[api.KeyValue]:
    return [api.KeyValue(key=k, value=v) for k, v in pairs]


# (id, image env, CRI envs, tty, expected)
ENV: list[tuple[str, tuple[str, ...], list[api.KeyValue], bool, list[str]]] = [
    ("defaults", (), [], False, [f"PATH={DEFAULT_PATH}", "HOSTNAME=web-pod"]),
    ("image-path-replaces-default", ("PATH=/opt/bin", "A=1"), [], False,
     ["PATH=/opt/bin", "HOSTNAME=web-pod", "A=1"]),
    ("cri-wins-over-image", ("A=1", "B=2"), _env(("A", b"x"), ("C", b"3")), False,
     [f"PATH={DEFAULT_PATH}", "HOSTNAME=web-pod", "A=x", "B=2", "C=3"]),
    ("cri-can-set-path-and-hostname", (), _env(("PATH", b"/x"), ("HOSTNAME", b"h")), False,
     ["PATH=/x", "HOSTNAME=h"]),
    ("tty-adds-term", (), [], True, [f"PATH={DEFAULT_PATH}", "TERM=xterm", "HOSTNAME=web-pod"]),
    ("image-term-replaces", ("TERM=vt100",), [], True,
     [f"PATH={DEFAULT_PATH}", "TERM=vt100", "HOSTNAME=web-pod"]),
    ("image-entry-without-equals-skipped", ("JUSTKEY", "A=1"), [], False,
     [f"PATH={DEFAULT_PATH}", "HOSTNAME=web-pod", "A=1"]),
    ("value-with-equals", (), _env(("Q", b"a=b=c")), False,
     [f"PATH={DEFAULT_PATH}", "HOSTNAME=web-pod", "Q=a=b=c"]),
    ("empty-value", (), _env(("E", b"")), False, [f"PATH={DEFAULT_PATH}", "HOSTNAME=web-pod", "E="]),
    ("utf8-value", (), _env(("U", "grüß".encode())), False,
     [f"PATH={DEFAULT_PATH}", "HOSTNAME=web-pod", "U=grüß"]),
    ("invalid-utf8-replaced", (), _env(("B", b"\xff")), False,
     [f"PATH={DEFAULT_PATH}", "HOSTNAME=web-pod", "B=\ufffd"]),
    ("cri-duplicate-last-wins", (), _env(("D", b"1"), ("D", b"2")), False,
     [f"PATH={DEFAULT_PATH}", "HOSTNAME=web-pod", "D=2"]),
]


@pytest.mark.parametrize(("image_env", "envs", "tty", "expected"), [row[1:] for row in ENV],
                         ids=[row[0] for row in ENV])
def test_env_merge(image_env: tuple[str, ...], envs: list[api.KeyValue], tty: bool,
                   expected: list[str]) -> None:
    config = container_config(envs=envs, tty=tty)
    assert process_env(config, ImageConfig(env=image_env), hostname="web-pod", container="app") == expected


@pytest.mark.parametrize("kv", [
    api.KeyValue(key="", value=b"x"),
    api.KeyValue(key="A=B", value=b"x"),
    api.KeyValue(key="A", value=b"x\x00y"),
], ids=["empty-key", "equals-in-key", "nul-in-value"])
def test_env_invalid(kv: api.KeyValue) -> None:
    with pytest.raises(InvalidArgument, match=r"envs\[0\]"):
        process_env(container_config(envs=[kv]), ImageConfig(), hostname="h", container="app")


@pytest.mark.parametrize(("cri", "image", "expected"), [
    ("/work", "/image", "/work"),
    ("", "/image", "/image"),
    ("", "relative", "/relative"),
    ("", "", "/"),
], ids=["cri", "image", "image-relative", "root"])
def test_working_dir(cri: str, image: str, expected: str) -> None:
    config = container_config(working_dir=cri)
    assert working_dir(config, ImageConfig(working_dir=image), container="app") == expected


def test_working_dir_relative_cri_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="working_dir 'work' must be an absolute path"):
        working_dir(container_config(working_dir="work"), ImageConfig(), container="app")


@pytest.mark.parametrize(("tty", "stdin"), [(False, False), (True, True), (False, True)],
                         ids=["plain", "tty-stdin", "stdin-only"])
def test_terminal_follows_tty(tty: bool, stdin: bool) -> None:
    spec = build_container_spec(container_inputs(container_config(tty=tty, stdin=stdin)))
    assert spec["process"]["terminal"] is tty


def _spec(**kw: Any) -> dict[str, Any]:
    sc = api.LinuxContainerSecurityContext(run_as_user=api.Int64Value(value=33), no_new_privs=True,
                                           capabilities=api.Capability(drop_capabilities=["NET_RAW"]))
    config = container_config(sc=sc, envs=_env(("A", b"1")), working_dir="/srv", **kw)
    return build_container_spec(container_inputs(config))


def test_exec_process_copies_the_container_identity() -> None:
    spec = _spec()
    process = exec_process(spec, ["ls", "-l"], tty=False)
    assert process["args"] == ["ls", "-l"]
    assert process["terminal"] is False
    for key in ("user", "env", "cwd", "capabilities", "noNewPrivileges"):
        assert process[key] == spec["process"][key], key
    assert "oomScoreAdj" not in process
    process["env"].append("MUTATED=1")
    assert "MUTATED=1" not in spec["process"]["env"]


def test_exec_process_env_extra_and_tty() -> None:
    process = exec_process(_spec(), ["sh"], tty=True, env_extra=["A=2", "NEW=x"])
    assert "A=2" in process["env"]
    assert "A=1" not in process["env"]
    assert process["env"][-2:] == ["NEW=x", "TERM=xterm"]
    assert process["terminal"] is True


def test_exec_process_keeps_container_term() -> None:
    process = exec_process(_spec(tty=True), ["sh"], tty=True)
    assert process["env"].count("TERM=xterm") == 1


@pytest.mark.parametrize(("cmd", "extra"), [([], ()), ([""], ()), (["sh"], ("NOEQUALS",)), (["sh"], ("=x",))],
                         ids=["empty", "empty-program", "extra-without-equals", "extra-empty-key"])
def test_exec_process_invalid(cmd: list[str], extra: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgument, match="exec"):
        exec_process(_spec(), cmd, tty=False, env_extra=extra)
