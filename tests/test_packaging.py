"""What a wheel of interlock ships besides the code: its licence and its type-hint marker (PEP 561)."""

import sys
from pathlib import Path

import pytest

import interlock

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_is_marked_as_typed_and_ships_the_marker():
    assert (Path(interlock.__file__).parent / "py.typed").is_file()
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["interlock"]


def test_the_declared_licence_is_the_licence_file():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert declared == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
