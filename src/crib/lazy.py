"""Modules that load on first use, for the daemon's idle memory (board contract 5: ≤ 45 MiB).

    if TYPE_CHECKING:
        import httpx
    else:
        httpx = lazy.module("httpx")

The name is bound at import time, as an ordinary import would, but the module's code runs only when one
of its attributes is first read (importlib.util.LazyLoader). For libraries a daemon that never pulls (or
never serves metrics) must not pay for: httpx alone, with what it drags in, is ~10 MiB of RSS.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def module(name: str) -> ModuleType:
    """name, loaded now if it is already imported, otherwise on first attribute access.

    Raises:
        ModuleNotFoundError: no such module is installed (checked now, not at first use).
    """
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    lazy = importlib.util.module_from_spec(spec)
    sys.modules[name] = lazy
    loader.exec_module(lazy)
    return lazy


__all__ = ["module"]
