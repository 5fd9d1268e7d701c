"""One version: the package, /api/health and the OpenAPI document, the AsyncAPI document and the
newest CHANGELOG entry agree."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest

from schemas.asyncapi import document
from services import __version__
from services.common.config import CommonSettings
from services.gateway.app import build_app
from services.gateway.config import Settings
from tests.conftest import REPO


def test_pyproject_takes_the_version_from_the_code() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "services.__version__"}


def test_the_newest_changelog_entry_is_this_version() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    newest = re.search(r"^## (\d+\.\d+\.\d+)", text, re.M)
    assert newest is not None
    assert newest.group(1) == __version__


def test_the_api_documents_carry_the_version() -> None:
    app = build_app(Settings(), CommonSettings())
    assert app.openapi()["info"]["version"] == __version__
    assert document()["info"]["version"] == __version__


def test_the_installed_package_has_the_version() -> None:
    try:
        installed = metadata.version("vertac")
    except metadata.PackageNotFoundError:
        pytest.skip("vertac is not installed (run from a checkout); make install installs it")
    assert installed == __version__, "reinstall: pip install -e ."
