"""contrib/crib.service is a unit systemd accepts, and says what the README promises."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crib.cli.client import DEFAULT_ENDPOINT

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib" / "crib.service"
ANALYZE = shutil.which("systemd-analyze")


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)


def _installed_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointing at this checkout's crib (verify wants an existing executable)."""
    crib = Path(sys.executable).parent / "crib"
    path = tmp_path / "crib.service"
    path.write_text(text.replace("/usr/local/bin/crib", str(crib)))
    return path


def test_unit_says_what_the_readme_promises() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    service = unit["Service"]
    assert service["KillMode"] == "process"  # containers (conmon) survive a crib restart
    assert service["Restart"] == "always"
    assert service["ExecStart"].split()[1:] == ["daemon", "--listen", DEFAULT_ENDPOINT]
    assert service["LimitNOFILE"] == "1048576"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "kubelet.service" in unit["Unit"]["Before"]


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (package systemd)")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    out = _verify(_installed_copy(tmp_path, UNIT.read_text()))
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr  # systemd only warns about a bad setting: no warning either
    typo = UNIT.read_text().replace("KillMode=process", "KillMode=proces")
    broken = _verify(_installed_copy(tmp_path, typo))
    assert "KillMode" in broken.stderr or "kill mode" in broken.stderr  # the check can fail
