"""The shape of the house, enforced: import directions, every RPC served, every error mapped."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from crib import errors
from crib._proto.runtime.v1 import api_pb2
from crib.cri.image_servicer import ImageServicer
from crib.cri.runtime_servicer import RuntimeServicer
from crib.cri.status import CODES

SRC = Path(__file__).resolve().parents[1] / "src" / "crib"

# Lower layers never import higher ones (ARCHITECTURE.md "Layers").
LAYERS: dict[str, int] = {
    "config": 0, "errors": 0, "ids": 0, "log": 0, "_proto": 0, "failpoints": 0, "lazy": 0,
    "system": 1, "proc": 1,
    "oci": 2, "runtime": 2, "network": 2, "rootfs": 2, "state": 2, "metrics": 2, "nri": 2, "hooks": 2,
    "sandbox": 3, "containers": 3, "images": 3, "streaming": 3,
    "cri": 4, "cli": 4,
    "testing": 5, "daemon": 5, "node": 5, "__main__": 5,
}
# Only the adapter layer and the composition root speak gRPC.
GRPC_ALLOWED = {"cri", "cli", "daemon", "_proto"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "_proto":
            continue
        top = rel.parts[0].removesuffix(".py")
        out.append((top, path))
    return out


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize(("top", "path"), _modules(), ids=lambda v: str(v).split("src/crib/")[-1])
def test_imports_point_down(top: str, path: Path) -> None:
    if top == "__init__":
        return
    assert top in LAYERS, f"{path}: package {top!r} has no layer; add it to ARCHITECTURE.md and LAYERS"
    mine = LAYERS[top]
    for name in _imports(path):
        if name == "grpc" or name.startswith("grpc."):
            assert top in GRPC_ALLOWED, f"{path} imports {name}: only cri/, cli/ and daemon.py speak gRPC"
        if not name.startswith("crib."):
            continue
        target = name.split(".")[1]
        if target not in LAYERS:
            continue  # `crib.__version__` and friends
        assert LAYERS[target] <= mine, (
            f"{path.relative_to(SRC)} (layer {mine}) imports {name} (layer {LAYERS[target]}): "
            "imports point down"
        )


@pytest.mark.parametrize(("servicer", "service"), [(RuntimeServicer, "RuntimeService"),
                                                   (ImageServicer, "ImageService")], ids=["runtime", "image"])
def test_every_rpc_has_a_servicer_method(servicer: type, service: str) -> None:
    for method in api_pb2.DESCRIPTOR.services_by_name[service].methods:
        impl = getattr(servicer, method.name, None)
        assert impl is not None, f"{service}.{method.name} has no servicer method"
        is_async = inspect.iscoroutinefunction(impl) or inspect.isasyncgenfunction(impl)
        assert is_async, f"{service}.{method.name} must be async"


def test_every_error_has_a_code() -> None:
    classes = [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
               if issubclass(obj, errors.CribError)]
    assert classes
    for cls in classes:
        assert cls in CODES, f"errors.{cls.__name__} has no gRPC code in cri/status.py"


def test_domain_modules_do_not_build_responses() -> None:
    """Only cri/ and cli/ construct CRI response messages; the domain returns its own dataclasses.

    nri/ is the adapter of another protocol (NRI over ttrpc) and answers its plugins' calls itself.
    """
    for top, path in _modules():
        if top in {"cri", "cli", "testing", "nri"}:
            continue
        text = path.read_text()
        assert "Response(" not in text, f"{path}: builds a CRI response outside cri/"
