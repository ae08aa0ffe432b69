"""Log lines: text key=value with quoting, or one JSON object."""

from __future__ import annotations

import json
import logging

import pytest

from crib import log
from crib._proto.runtime.v1 import api_pb2 as api
from crib.cri.interceptors import request_fields


def record(**fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("crib.test", logging.INFO, __file__, 1, "rpc", None, None)
    rec.fields = fields  # type: ignore[attr-defined]
    return rec


def test_text_format_quotes_values_with_spaces() -> None:
    line = log.TextFormatter().format(record(method="Version", error="no such thing", n=3, skip=None))
    assert " INFO rpc method=Version " in line
    assert 'error="no such thing"' in line
    assert "n=3" in line
    assert "skip" not in line


def test_json_format_is_one_object() -> None:
    doc = json.loads(log.JsonFormatter().format(record(method="Status", duration_ms=1.5)))
    assert doc["msg"] == "rpc"
    assert doc["method"] == "Status"
    assert doc["duration_ms"] == 1.5
    assert doc["level"] == "info"


def test_setup_rejects_unknown_level() -> None:
    with pytest.raises(ValueError, match="log level"):
        log.setup("chatty", "text")


def test_request_fields_pick_ids_never_credentials() -> None:
    req = api.PullImageRequest(image=api.ImageSpec(image="busybox"),
                               auth=api.AuthConfig(username="u", password="secret"))
    fields = request_fields(req)
    assert fields == {"image": "busybox"}
    assert "secret" not in json.dumps(fields)
    req2 = api.CreateContainerRequest(pod_sandbox_id="p1",
                                      config=api.ContainerConfig(metadata=api.ContainerMetadata(name="web")))
    assert request_fields(req2) == {"pod": "p1", "name": "web"}
