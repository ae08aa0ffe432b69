"""Suite-wide settings.

Each checkout gets its own pytest temporary root: pytest prunes old `pytest-N` directories under a shared
/tmp/pytest-of-<user>, which would delete the live temporary directories (sockets, mounts) of a test run
going on in another checkout of crib on the same machine.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    if "PYTEST_DEBUG_TEMPROOT" not in os.environ:
        tag = hashlib.sha1(str(REPO).encode()).hexdigest()[:8]
        root = Path(tempfile.gettempdir()) / f"crib-tests-{tag}"
        root.mkdir(mode=0o700, exist_ok=True)
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(root)
