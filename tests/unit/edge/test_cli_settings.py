"""Edge commands run beside ``vertac run`` take its admin's credentials, as the others do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.client import BusSettings, beside_local_run


def test_beside_a_local_run_the_edge_tools_sign_in_as_its_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("VERTAC_NATS"):
            monkeypatch.delenv(name)
    assert beside_local_run(BusSettings()).nats_url == "nats://127.0.0.1:4222"
    (tmp_path / ".vertac").mkdir()
    (tmp_path / ".vertac" / "nats.secrets").write_text(json.dumps({"admin": "p/w@1"}))
    assert beside_local_run(BusSettings()).nats_url == "nats://admin:p%2Fw%401@127.0.0.1:4222"
    # credentials given by the user win; another server is left alone
    assert beside_local_run(BusSettings(nats_user="edge-x")).nats_url == "nats://127.0.0.1:4222"
    other = BusSettings(nats_url="nats://plant:4222")
    assert beside_local_run(other).nats_url == "nats://plant:4222"
