"""Fuzzing the manifest, index and config parsers: whatever a registry serves, the answer is a parsed
value or a CribError that says what is wrong (BadImage, NotFound), never another exception.

Inputs: arbitrary JSON (deep and wide), valid documents with fields replaced by arbitrary values, raw
bytes, and valid documents damaged byte-wise. Bounded by CRIB_FUZZ_EXAMPLES (default 150 per test).
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crib.errors import CribError
from crib.images import manifest as mf

EXAMPLES = int(os.environ.get("CRIB_FUZZ_EXAMPLES", "150"))
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))
DIGEST = "sha256:" + "ab" * 32

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (st.lists(children, max_size=6)
                      | st.dictionaries(st.text(max_size=12), children, max_size=6)),
    max_leaves=40)

VALID_MANIFEST = {
    "schemaVersion": 2, "mediaType": mf.MT_OCI_MANIFEST,
    "config": {"mediaType": mf.MT_OCI_CONFIG, "digest": DIGEST, "size": 10},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": DIGEST, "size": 20}],
}
VALID_INDEX = {
    "schemaVersion": 2, "mediaType": mf.MT_OCI_INDEX,
    "manifests": [{"mediaType": mf.MT_OCI_MANIFEST, "digest": DIGEST, "size": 30,
                   "platform": {"os": "linux", "architecture": "amd64"}}],
}
VALID_CONFIG = {
    "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [DIGEST]},
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "User": "1000", "Labels": {"a": "b"},
               "Volumes": {"/data": {}}, "ExposedPorts": {"80/tcp": {}}},
}


def _replace_paths(doc: Any, data: st.DataObject, depth: int = 0) -> Any:
    """doc with some values (at any depth) replaced by arbitrary JSON."""
    if depth > 4 or data.draw(st.integers(0, 4), label="replace?") == 0:
        return data.draw(JSON, label="value")
    if isinstance(doc, dict):
        return {k: _replace_paths(v, data, depth + 1) if data.draw(st.booleans()) else v
                for k, v in doc.items()}
    if isinstance(doc, list):
        return [_replace_paths(v, data, depth + 1) for v in doc]
    return doc


def _documents(data: st.DataObject, valid: dict[str, Any]) -> bytes:
    kind = data.draw(st.integers(0, 4), label="kind")
    if kind == 0:
        return json.dumps(data.draw(JSON)).encode()
    if kind == 1:
        return data.draw(st.binary(max_size=512))
    if kind == 2:  # nested far deeper than any manifest: a parser must not blow its stack
        depth = data.draw(st.sampled_from((100, 1000, 100000)))
        opener = data.draw(st.sampled_from(("[", '{"a":')))
        return (opener * depth).encode()
    raw = json.dumps(_replace_paths(valid, data)).encode()
    if kind == 4 and raw:
        cut = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:cut] + data.draw(st.binary(max_size=8)) + raw[cut + 1:]
    return raw


def _only_crib_errors(call: Any) -> None:
    message = "(no error)"
    try:
        call()
    except CribError as exc:
        message = str(exc)
    assert message, "an error without a message"


@_SETTINGS
@given(data=st.data())
def test_manifests_parse_or_are_refused_with_a_crib_error(data: st.DataObject) -> None:
    raw = _documents(data, VALID_MANIFEST)
    header = data.draw(st.sampled_from(("", mf.MT_OCI_MANIFEST, mf.MT_DOCKER_MANIFEST, "text/plain")))
    _only_crib_errors(lambda: mf.media_type_of(raw, header, "fuzzed manifest"))
    _only_crib_errors(lambda: mf.parse_manifest(raw, mf.MT_OCI_MANIFEST, "fuzzed manifest"))


@_SETTINGS
@given(data=st.data())
def test_indexes_parse_or_are_refused_with_a_crib_error(data: st.DataObject) -> None:
    raw = _documents(data, VALID_INDEX)

    def parse_and_select() -> None:
        mf.select_platform(mf.parse_index(raw, "fuzzed index"), "fuzzed index")

    _only_crib_errors(parse_and_select)


@_SETTINGS
@given(data=st.data())
def test_configs_parse_or_are_refused_with_a_crib_error(data: st.DataObject) -> None:
    raw = _documents(data, VALID_CONFIG)

    def parse_and_read_user() -> None:
        mf.user_of(mf.parse_config(raw, "fuzzed config").config)

    _only_crib_errors(parse_and_read_user)


def test_the_valid_seeds_parse() -> None:
    """The seeds the fuzzer damages are themselves accepted (else it would only test refusals)."""
    assert mf.parse_manifest(json.dumps(VALID_MANIFEST).encode(), mf.MT_OCI_MANIFEST, "m").layers
    assert mf.select_platform(mf.parse_index(json.dumps(VALID_INDEX).encode(), "i"), "i",
                              mf.Platform(os="linux", architecture="amd64"))
    assert mf.parse_config(json.dumps(VALID_CONFIG).encode(), "c").config.cmd == ("sh",)
