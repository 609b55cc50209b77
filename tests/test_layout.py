"""The design card's layout, and imports that point one way: flows -> tasks -> devices.

A layer may import the layers below it (the CLI's ``sim`` command starts the device
simulator directly), never one above; schemas import no other project package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGES = ("flows", "tasks", "devices", "schemas")
ALLOWED = {
    "flows": {"flows", "tasks", "devices", "schemas"},
    "tasks": {"tasks", "devices", "schemas"},
    "devices": {"devices"},
    "schemas": {"schemas"},
}


def _project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES}
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_one_way(package: str) -> None:
    for path in sorted((REPO / package).rglob("*.py")):
        bad = _project_imports(path) - ALLOWED[package]
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_the_design_card_layout_is_there() -> None:
    for name in ("pyproject.toml", "uv.lock", "Makefile", "README.md", ".ci/run"):
        assert (REPO / name).is_file(), name
    for name in (*PACKAGES, "tests", "deploy", "bench"):
        assert (REPO / name).is_dir(), name
