"""The repository describes itself truly: no package calls itself a placeholder, and the README and docs
link only to files a clone of this repository has (once, they linked ../shared/ARCHITECTURE.md and
../shared/STYLE.md, which exist only on the machine crib was first built on)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted((ROOT / "src" / "crib").rglob("__init__.py"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("init", PACKAGES, ids=lambda p: str(p.parent.relative_to(ROOT / "src")))
def test_every_package_says_what_it_is(init: Path) -> None:
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    if "_proto" in init.parts:
        return  # generated code
    assert doc.strip(), f"{init} has no docstring"
    assert "placeholder" not in doc.lower(), f"{init} still describes itself as a placeholder: {doc!r}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor of the same page
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name} links {target}, outside the repository"
        assert path.exists(), f"{doc.name} links {target}, which does not exist"
