"""crib: a small, readable Kubernetes container runtime.

crib answers the CRI v1 gRPC API and drives runc through conmon, CNI plugins for pod networks and overlayfs
for root filesystems. `crib.__version__` is what `Version` reports as runtime_version; it is looked up on
first use, from the installed dist-info (importlib.metadata would cost every `crib ps` tens of milliseconds
and the daemon ~3 MiB).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name != "__version__":
        raise AttributeError(f"module 'crib' has no attribute {name!r}")
    version = _installed_version()
    globals()["__version__"] = version
    return version


def _installed_version() -> str:
    """The Version: line of crib's installed dist-info, found without importlib.metadata (which brings
    email, zipfile and csv into the daemon: ~3 MiB of its idle memory, board contract 5)."""
    import os
    import sys

    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for dist in names:
            if dist.startswith("crib-") and dist.endswith(".dist-info"):
                try:
                    with open(os.path.join(entry, dist, "METADATA"), encoding="utf-8") as fh:
                        for line in fh:
                            if line.startswith("Version:"):
                                return line.split(":", 1)[1].strip()
                            if not line.strip():
                                break
                except OSError:
                    continue
    return "0.0.0+unknown"  # running from a source tree that was never installed


__all__ = ["__version__"]
