"""The docs document every setting a service reads; the README's links and the docs site hold."""

from __future__ import annotations

import pytest

from services.alerts.config import Settings as AlertsSettings
from services.analysis.config import Settings as AnalysisSettings
from services.common.config import CommonSettings
from services.cycles.config import Settings as CyclesSettings
from services.gateway.config import Settings as GatewaySettings
from services.ingest.config import Settings as IngestSettings
from tests.conftest import REPO

CONFIGURATION = (REPO / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize(
    "settings",
    [
        CommonSettings,
        IngestSettings,
        GatewaySettings,
        CyclesSettings,
        AnalysisSettings,
        AlertsSettings,
    ],
)
def test_every_setting_is_in_the_readme(settings: type) -> None:
    prefix = settings.model_config["env_prefix"]
    for name in settings.model_fields:
        variable = f"{prefix}{name.upper()}"
        generic = f"VERTAC_<S>_{name.upper()}"
        assert variable in CONFIGURATION or generic in CONFIGURATION, (
            f"{variable} is not documented"
        )


def test_every_link_of_the_readme_leads_to_a_file() -> None:
    import re

    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert len(links) > 15, links
    for link in links:
        assert (REPO / link).exists(), f"README links to {link}, which does not exist"


def test_the_docs_site_builds_strictly() -> None:
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as site:
        done = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", site],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert (REPO / "docs" / "api" / "rest.md").exists()


def test_no_source_file_is_over_500_lines() -> None:
    """A module a reader can hold in mind: past 500 lines it is split by concern."""
    sources = [
        p
        for top in ("services", "schemas", "edge")
        for p in (REPO / top).rglob("*.py")
        if "node_modules" not in p.parts
    ]
    assert len(sources) > 50, "the source tree was not found"
    long = {
        str(p.relative_to(REPO)): n for p in sources if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, f"split these by concern: {long}"
