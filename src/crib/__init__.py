"""crib: a small, readable Kubernetes container runtime.

crib answers the CRI v1 gRPC API and drives runc through conmon, CNI plugins for pod networks and overlayfs
for root filesystems. `crib.__version__` is what `Version` reports as runtime_version; it is looked up on
first use (importlib.metadata costs tens of milliseconds, which every `crib ps` would otherwise pay).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name != "__version__":
        raise AttributeError(f"module 'crib' has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("crib")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        version = "0.0.0+unknown"
    globals()["__version__"] = version
    return version


__all__ = ["__version__"]
