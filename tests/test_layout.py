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


VENDORS = ("devices.archon", "devices.alpaca")
SIMULATOR_COMMAND = "flows/cli.py"  # `ccdflow sim` starts the Archon simulator


def _vendor_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name for name in names if name.startswith(VENDORS)}
    return found


def test_flows_and_tasks_import_no_vendor_package() -> None:
    """Cameras and devices are reached through devices.camera / devices.registry."""
    leaking = {
        str(path.relative_to(REPO))
        for package in ("flows", "tasks")
        for path in sorted((REPO / package).rglob("*.py"))
        if _vendor_imports(path)
    }
    assert leaking - {SIMULATOR_COMMAND} == set(), "vendor imports in flows/ or tasks/"


def test_only_the_registry_names_a_vendor_outside_the_vendor_packages() -> None:
    for path in sorted((REPO / "devices").glob("*.py")):
        if path.name != "registry.py":
            assert not _vendor_imports(path), f"{path.relative_to(REPO)} imports a vendor"


def test_no_vendor_package_imports_another() -> None:
    for vendor in VENDORS:
        folder = REPO / Path(*vendor.split("."))
        for path in sorted(folder.rglob("*.py")):
            others = {name for name in _vendor_imports(path) if not name.startswith(vendor)}
            assert not others, f"{path.relative_to(REPO)} imports {sorted(others)}"
