"""Edge commands run beside ``vertac run`` take its admin's credentials, as the others do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.client import BusSettings, beside_local_run


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


def test_one_agent_holds_a_buffer_file_and_readers_still_read_it(tmp_path: Path) -> None:
    from edge.buffer import BufferInUse, FrameBuffer

    path = tmp_path / "buffer.sqlite"
    first = FrameBuffer(path, "press-1", 2**20, exclusive=True)
    with pytest.raises(BufferInUse, match=r"in use by another agent \(pid \d+\)"):
        FrameBuffer(path, "press-1", 2**20, exclusive=True)
    reader = FrameBuffer(path, "press-1", 2**20)  # vertac edge status beside the agent
    assert reader.status().depth == 0
    reader.close()
    first.close()
    FrameBuffer(path, "press-1", 2**20, exclusive=True).close()  # free again


def test_edge_check_prints_readings_as_read() -> None:
    from edge.check import number

    assert number(-123456789.0) == "-123456789"
    assert number(65535.0) == "65535"
    assert number(0.1) == "0.1"
    assert number(1.2345678901) == "1.2345678901"
    assert number(float("inf")) == "inf"
