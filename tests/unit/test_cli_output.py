"""The CLI's pure pieces: tables, sizes, times, templates, durations, CRI log records, image filters, top."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crib._proto.runtime.v1 import api_pb2 as api
from crib.cli import crilog, output
from crib.cli.commands.images import filter_images
from crib.cli.commands.top import Row, Sampler, render
from crib.cli.timeparse import BadTime, human_duration, parse_duration, parse_since


def test_table_lays_out_like_tabwriter() -> None:
    table = output.Table(["POD ID", "NAME"])
    table.add(["abc", "a-very-long-name-that-is-wide"])
    table.add(["a" * 25, "x"])
    lines = table.render().splitlines()
    assert lines[0] == "POD ID".ljust(28) + "NAME"
    assert lines[1] == "abc".ljust(28) + "a-very-long-name-that-is-wide"
    assert lines[2] == "a" * 25 + "   x"


@pytest.mark.parametrize(("n", "precision", "text"), [(0, 4, "0B"), (999, 4, "999B"), (1040000, 3, "1.04MB"),
                                                      (4096, 4, "4.096kB"), (2.5e9, 4, "2.5GB")],
                         ids=["zero", "bytes", "mb", "kb", "gb"])
def test_human_size(n: float, precision: int, text: str) -> None:
    assert output.human_size(n, precision) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (90, "About a minute"),
    (600, "10 minutes"), (3600, "About an hour"), (7200, "2 hours"), (3 * 86400, "3 days")],
                         ids=["sub", "one", "secs", "minute", "mins", "hour", "hours", "days"])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_rfc3339nano_trims_zeros() -> None:
    assert output.rfc3339nano(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert output.rfc3339nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_templates_and_their_limits() -> None:
    doc = {"status": {"network": {"ip": "10.88.0.5"}, "id": "abc", "labels": {"b": "2", "a": "1"}}}
    assert output.render_template("{{.status.network.ip}}", doc) == "10.88.0.5"
    assert output.render_template("id={{ .status.id }} {{upper .status.id}}", doc) == "id=abc ABC"
    assert output.render_template("{{.status.labels}}", doc) == "map[a:1 b:2]"
    with pytest.raises(output.TemplateError, match="no entry for key 'ipx'"):
        output.render_template("{{.status.network.ipx}}", doc)
    with pytest.raises(output.TemplateError, match="field paths"):
        output.render_template("{{range .status.labels}}x{{end}}", doc)


def test_info_values_as_crictl_shows_them() -> None:
    assert output.info_value('{"a": 1}') == {"a": 1}
    assert output.info_value('"quoted"') == "quoted"
    assert output.info_value("plain") == "plain"


@pytest.mark.parametrize(("text", "seconds"), [("2s", 2), ("1m30s", 90), ("1.5h", 5400), ("300ms", 0.3),
                                               ("-1s", -1), ("7", 7)],
                         ids=["s", "m-s", "fraction", "ms", "negative", "plain"])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "2x", "1m 30s", "fast"], ids=["empty", "unit", "bad-unit", "space",
                                                                          "word"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadTime):
        parse_duration(text)


def test_since_forms() -> None:
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_since("42m", now) == now - timedelta(minutes=42)
    assert parse_since("2024-01-01T00:00:00Z", now) == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_since("1704067200.5", now) == datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    with pytest.raises(BadTime, match="RFC 3339"):
        parse_since("yesterday", now)


# ------------------------------------------------------------------------------------------------ logs

LOG = (b"2024-01-01T00:00:01.000000001Z stdout F one\n"
       b"2024-01-01T00:00:02.5+00:00 stderr F two\n"
       b"2024-01-01T00:00:03.000000003Z stdout P thr\n"
       b"2024-01-01T00:00:03.100000000Z stdout F ee\n"
       b'{"log":"four\\n","stream":"stdout","time":"2024-01-01T00:00:04Z"}\n'
       b"2024-01-01T00:00:05.000000005Z stdout F half-writ")


def _read(tmp_path: Path, **opts: object) -> list[tuple[str, bytes]]:
    path = tmp_path / "0.log"
    path.write_bytes(LOG)
    out: list[tuple[str, bytes]] = []
    crilog.read(str(path), crilog.Options(**opts), lambda s, d: out.append((s, d)))  # type: ignore[arg-type]
    return out


def test_log_records_partials_and_docker_json(tmp_path: Path) -> None:
    got = _read(tmp_path)
    assert b"".join(d for _, d in got) == b"one\ntwo\nthree\nfour\n"
    assert [s for s, _ in got] == ["stdout", "stderr", "stdout", "stdout", "stdout"]


def test_log_tail_since_stream_limit_and_timestamps(tmp_path: Path) -> None:
    assert b"".join(d for _, d in _read(tmp_path, tail=2)) == b"ee\nfour\n"
    assert b"".join(d for _, d in _read(tmp_path, tail=0)) == b""
    since = datetime(2024, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert b"".join(d for _, d in _read(tmp_path, since=since)) == b"three\nfour\n"
    assert [d for _, d in _read(tmp_path, streams=("stderr",))] == [b"two\n"]
    assert b"".join(d for _, d in _read(tmp_path, limit_bytes=6)) == b"one\ntw"
    first = _read(tmp_path, timestamps=True)[:2]
    assert first == [("stdout", b"2024-01-01T00:00:01.000000001Z one\n"),
                     ("stderr", b"2024-01-01T00:00:02.500000000Z two\n")]


def test_log_follow_reads_on_through_rotation_until_the_container_stops(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"2024-01-01T00:00:01Z stdout F before\n")
    got: list[bytes] = []
    states = iter([True, True, True, False])  # running for three looks, then stopped

    def writer_and_status() -> bool:
        # Each status look also moves the container along: a new line, a rotation, a last line.
        step = len(got)
        if step == 1:
            with path.open("ab") as fh:
                fh.write(b"2024-01-01T00:00:02Z stdout F appended\n")
        elif step == 2:
            path.rename(tmp_path / "0.log.1")
            path.write_bytes(b"2024-01-01T00:00:03Z stdout F rotated\n")
        return next(states, False)

    opts = crilog.Options(follow=True, poll=0.001, status_every=0.0)
    crilog.read(str(path), opts, lambda _s, d: got.append(d), writer_and_status)
    assert got == [b"before\n", b"appended\n", b"rotated\n"]


def test_log_tail_offset_counts_complete_records() -> None:
    fh = io.BytesIO(b"a\nb\nc\n")
    assert crilog.tail_offset(fh, 1) == 4
    assert crilog.tail_offset(fh, 5) == 0
    assert crilog.tail_offset(io.BytesIO(b"a\nb\nc\npartial"), 1) == 4


def test_previous_attempt_path() -> None:
    assert crilog.previous_path("/var/log/pods/x/web/2.log", 2) == "/var/log/pods/x/web/1.log"


# ------------------------------------------------------------------------------------- images and top


def _img(ident: str, tags: list[str]) -> api.Image:
    return api.Image(id=ident, repo_tags=tags)


def test_image_filters() -> None:
    imgs = [_img("sha256:aa", ["a:1"]), _img("sha256:bb", []), _img("sha256:cc", ["c:1"])]
    assert [i.id for i in filter_images(imgs, ("dangling=true",))] == ["sha256:bb"]
    assert [i.id for i in filter_images(imgs, ("reference=/^c/",))] == ["sha256:cc"]
    assert [i.id for i in filter_images(imgs, ("before=a:1",))] == ["sha256:bb", "sha256:cc"]
    assert [i.id for i in filter_images(imgs, ("since=sha256:cc",))] == ["sha256:aa", "sha256:bb"]


def test_top_cpu_between_readings_and_frame() -> None:
    sampler = Sampler()
    first = api.CpuUsage(timestamp=1_000_000_000, usage_core_nano_seconds=api.UInt64Value(value=0))
    second = api.CpuUsage(timestamp=2_000_000_000, usage_core_nano_seconds=api.UInt64Value(value=250_000_000))
    assert sampler.percent("c1", first) is None
    assert sampler.percent("c1", second) == pytest.approx(25.0)
    now = 1_000_000.0
    busy = Row(kind="container", ident="c" * 64, name="busy", state="Running", cpu=25.0, mem=2_000_000,
               restarts=2, created=int((now - 120) * 1e9))
    idle = Row(kind="container", ident="d" * 64, name="idle", state="Running", cpu=0.0, mem=1000,
               restarts=0, created=int((now - 60) * 1e9))
    pod = Row(kind="pod", ident="p" * 64, name="default/web", state="Ready", cpu=25.0, mem=3_000_000,
              restarts=2, created=int((now - 180) * 1e9), children=[idle, busy])
    lines = render([pod], "cpu", now).splitlines()
    assert "1 pods, 2 containers - sort: cpu" in lines[0]
    assert lines[2].split() == ["NAME", "ID", "STATE", "CPU", "%", "MEM", "RESTARTS", "AGE"]
    assert lines[3].split()[:6] == ["default/web", "p" * 13, "Ready", "25.0", "3MB", "2"]
    assert [line.split()[0] for line in lines[4:]] == ["busy", "idle"]
    by_name = render([pod], "name", now).splitlines()
    assert [line.split()[0] for line in by_name[4:]] == ["busy", "idle"]
    by_mem = render([pod], "restarts", now).splitlines()
    assert by_mem[4].split()[0] == "busy"
