"""Integration harness: real daemons, real registries, real runc/conmon/CNI; a leak check after each test.

These tests need root (mounts, namespaces, cgroups). Everything they create lives under pytest's
temporary directories and is torn down by PID or path, never by name matching on the whole machine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import cri, leaks
from tests.fixtures import images as img
from tests.fixtures.cni import Testbed
from tests.fixtures.daemon import CribDaemon

# Fixtures of the registry and image builder, shared by every integration test module.
from tests.fixtures.images import auth_images, images  # noqa: F401
from tests.fixtures.registry import auth_registry, registry  # noqa: F401
from tests.fixtures.registry_proxy import registry_proxy  # noqa: F401

if os.geteuid() != 0:  # pragma: no cover - the suite is documented to run as root
    pytest.exit("integration tests must run as root (they mount, create namespaces and cgroups)",
                returncode=1)

# A prefix unique to this test session: cgroups and bridge names of the tests carry it, so the leak
# check can find exactly what this session created.
SESSION_TAG = f"cribtest{uuid.uuid4().hex[:6]}"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return bool(rep is not None and rep.failed)


@pytest.fixture
def session_tag() -> str:
    return SESSION_TAG


@pytest.fixture
def crib_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., CribDaemon]]:
    """Start crib daemons with a test's own config; all are stopped, logged on failure, and leak-checked."""
    started: list[CribDaemon] = []

    def make(config: dict[str, Any] | None = None, *, name: str = "crib", start: bool = True,
             extra_args: list[str] | None = None) -> CribDaemon:
        daemon = CribDaemon(tmp_path / name, config, extra_args)
        started.append(daemon)
        return daemon.start() if start else daemon

    yield make

    problems: list[str] = []
    for daemon in started:
        if _failed(request):
            print(f"\n----- {daemon.workdir.name} daemon log (tail) -----\n{daemon.log_tail()}")
        daemon.stop()
        problems += leaks.check(daemon.workdir, cgroup_fragment=SESSION_TAG)
    assert not problems, "leaks after the test:\n" + "\n".join(problems)


@pytest.fixture
def crib(crib_factory: Callable[..., CribDaemon]) -> CribDaemon:
    """A crib daemon on embedded defaults (plus per-test root, runroot and socket)."""
    return crib_factory()


@pytest.fixture
def busybox(crib: CribDaemon, images: img.Catalogue) -> str:  # noqa: F811 (the fixture above)
    """The busybox test image, pulled into the test's daemon (modules may define their own)."""
    reference = images.reference(img.BUSYBOX)
    cri.pull(crib, reference)
    return reference


@pytest.fixture
def pod(crib: CribDaemon, session_tag: str, tmp_path: Path) -> Iterator[cri.Pod]:
    """A running pod on the test's daemon, kubelet-like, removed afterwards (modules may define their own)."""
    p = cri.Pod(crib, cri.pod_config(session_tag, log_dir=tmp_path / "logs"))
    yield p
    p.remove()


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Testbed]:
    """A CNI test bed of the test's own (conf dir, bridge, subnet, lease dir), removed afterwards."""
    testbed = Testbed(tmp_path / "cni", SESSION_TAG)
    try:
        yield testbed
    finally:
        testbed.cleanup()
