"""The README documents every setting a service reads."""

from __future__ import annotations

import pytest

from services.alerts.config import Settings as AlertsSettings
from services.analysis.config import Settings as AnalysisSettings
from services.common.config import CommonSettings
from services.cycles.config import Settings as CyclesSettings
from services.gateway.config import Settings as GatewaySettings
from services.ingest.config import Settings as IngestSettings
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


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
        assert variable in README or generic in README, f"{variable} is not documented"
