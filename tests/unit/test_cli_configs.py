"""Pod and container config files: crictl's files parse, mistakes are errors naming field and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli.configs import ConfigFileError, load_container_config, load_pod_config

REPO = Path(__file__).resolve().parents[2]

POD_YAML = """\
metadata:
  name: wordpress
  namespace: default
  attempt: 1
hostname: wp
log_directory: /tmp/logs
dns_config:
  servers: [10.88.0.1]
  searches: [example.local]
port_mappings:
- {protocol: 0, container_port: 80, host_port: 8080}
labels: {app: wp}
linux:
  security_context:
    namespace_options: {pid: 1}
"""

CONTAINER_JSON = """{
  "metadata": {"name": "web"},
  "image": {"image": "busybox"},
  "command": ["httpd", "-f"],
  "args": ["-p", "80"],
  "working_dir": "/srv",
  "envs": [{"key": "GREETING", "value": "hello from crib"}],
  "mounts": [{"container_path": "/srv", "host_path": "/tmp/www", "readonly": true}],
  "log_path": "web/0.log",
  "linux": {"resources": {"memory_limit_in_bytes": 67108864},
            "security_context": {"run_as_user": {"value": 1000},
                                 "capabilities": {"add_capabilities": ["NET_ADMIN"]}}}
}"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_yaml_pod_in_snake_case(tmp_path: Path) -> None:
    pod = load_pod_config(write(tmp_path, "pod.yaml", POD_YAML))
    assert (pod.metadata.name, pod.metadata.namespace, pod.metadata.attempt) == ("wordpress", "default", 1)
    assert pod.metadata.uid  # made up, as crictl does
    assert pod.port_mappings[0].host_port == 8080
    assert pod.port_mappings[0].protocol == api.TCP
    assert list(pod.dns_config.searches) == ["example.local"]
    assert pod.linux.security_context.namespace_options.pid == api.CONTAINER


def test_json_container_with_env_as_text(tmp_path: Path) -> None:
    ctr = load_container_config(write(tmp_path, "c.json", CONTAINER_JSON))
    assert ctr.envs[0].value == b"hello from crib"
    assert ctr.mounts[0].readonly
    assert ctr.working_dir == "/srv"
    assert ctr.linux.resources.memory_limit_in_bytes == 64 << 20
    assert ctr.linux.security_context.run_as_user.value == 1000
    assert ctr.image.user_specified_image == "busybox"


def test_camel_case_and_enum_names_work_too(tmp_path: Path) -> None:
    pod = load_pod_config(write(tmp_path, "p.json", '{"metadata": {"name": "a", "namespace": "b"}, '
                                '"portMappings": [{"protocol": "UDP", "containerPort": 53}]}'))
    assert pod.port_mappings[0].protocol == api.UDP
    assert pod.port_mappings[0].container_port == 53


@pytest.mark.parametrize(("text", "message"), [
    ('{"metadata": {"name": "a", "namespace": "b"}, "port_mapping": []}',
     r"unknown field 'port_mapping'.*did you mean 'port_mappings'"),
    ('{"metadata": {"name": "a", "namespace": "b"}, "linux": {"security_context": {"privilegd": true}}}',
     r"unknown field 'linux.security_context.privilegd'"),
    ('{"metadata": {"name": "a", "namespace": "b"}, "port_mappings": [{"hostport": 1}]}',
     r"unknown field 'port_mappings\[0\].hostport'"),
    ('{"metadata": {"name": "a"}}', "metadata.name and metadata.namespace"),
    ('{"hostname": "x"}', "metadata is not set"),
    ('{"metadata": {"name": "a", "namespace": "b"}, "port_mappings": {"x": 1}}', "must be a list"),
    ('{"metadata": {"name": "a", "namespace": "b"}, "labels": ["x"]}', "must be a map"),
    ('["not", "an", "object"]', "must be an object"),
    ('{"metadata": {"name": "a", "namespace": "b"}, "port_mappings": [{"host_port": "x"}]}', "host_port"),
], ids=["typo-top", "typo-nested", "typo-in-list", "no-namespace", "no-metadata", "not-list", "not-map",
        "not-object", "bad-value"])
def test_bad_pod_files_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "pod.json", text)
    with pytest.raises(ConfigFileError, match=message) as err:
        load_pod_config(path)
    assert path in str(err.value)


def test_container_needs_name_and_image(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"metadata\.name is not set"):
        load_container_config(write(tmp_path, "c.yaml", "image: {image: busybox}\n"))
    with pytest.raises(ConfigFileError, match=r"image\.image is not set"):
        load_container_config(write(tmp_path, "d.yaml", "metadata: {name: x}\n"))


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not found"):
        load_pod_config(str(tmp_path / "nope.json"))
    with pytest.raises(ConfigFileError, match="not valid JSON"):
        load_pod_config(write(tmp_path, "broken.json", '{"metadata": '))
    with pytest.raises(ConfigFileError, match="not valid YAML"):
        load_pod_config(write(tmp_path, "broken.yaml", "metadata: [\n"))


EXAMPLE_FILES = sorted(str(p.relative_to(REPO / "examples")) for p in (REPO / "examples").rglob("*")
                       if p.suffix in (".json", ".yaml"))


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_every_example_file_parses(name: str) -> None:
    path = str(REPO / "examples" / name)
    if "pod" in Path(name).name:
        load_pod_config(path)
    else:
        load_container_config(path)


def test_the_examples_are_all_there() -> None:
    assert {"pod.json", "container-web.json", "blog/pod.yaml", "blog/db.yaml", "blog/web.yaml"} <= set(
        EXAMPLE_FILES)
