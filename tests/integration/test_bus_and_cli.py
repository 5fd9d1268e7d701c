"""Bus set-up and the set-up commands against real servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from schemas import subjects
from services.common.bus import init_bus
from services.common.config import CommonSettings
from tests.conftest import REPO

pytestmark = pytest.mark.integration


async def test_bus_init_is_idempotent_and_applies_changed_limits(
    bus, common: CommonSettings
) -> None:
    again = await init_bus(bus.js, common)
    assert set(again.values()) == {"unchanged"}
    assert set(again) >= {s.name for s in subjects.ALL_STREAMS} | set(subjects.ALL_KV)
    changed = common.model_copy(update={"samples_max_age_s": 3600.0, "duplicate_window_s": 30.0})
    result = await init_bus(bus.js, changed)
    assert result[subjects.SAMPLES.name] == "updated"
    info = await bus.js.stream_info(subjects.SAMPLES.name)
    assert info.config.max_age == 3600
    assert info.config.duplicate_window == 30
    assert info.config.max_bytes == common.samples_max_bytes


def test_bus_init_and_db_migrate_commands(common: CommonSettings, pg_cluster) -> None:
    fresh_db = pg_cluster.new_database()
    env = {**os.environ, "VERTAC_NATS_URL": common.nats_url, "VERTAC_DATABASE_URL": fresh_db}
    run = [sys.executable, "-m", "services.cli"]
    out = subprocess.run(
        [*run, "bus", "init"], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "VERTAC_SAMPLES" in out.stdout
    out = subprocess.run(
        [*run, "db", "migrate"], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "applied: 0001_init" in out.stdout
    out = subprocess.run(
        [*run, "db", "migrate"], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "up to date" in out.stdout
    bad = {**env, "VERTAC_NATS_URL": "nats://127.0.0.1:1"}
    out = subprocess.run(
        [*run, "bus", "init"], env=bad, cwd=REPO, capture_output=True, text=True, check=False
    )
    assert out.returncode == 2
    assert "vertac: NATS at nats://127.0.0.1:1 is unreachable" in out.stderr


def test_cycle_commands_from_the_cli_reach_the_control_subject(
    common: CommonSettings, stream_id: str
) -> None:
    import asyncio

    from schemas.messages import CycleCommand
    from services.common.runtime import open_bus

    env = {**os.environ, "VERTAC_NATS_URL": common.nats_url}
    run = [sys.executable, "-m", "services.cli", "cycle"]
    for verb in ("start", "stop", "abort"):
        out = subprocess.run([*run, verb, stream_id, "--reason", "from the test"], env=env, cwd=REPO,
                             capture_output=True, text=True, check=True)  # fmt: skip
        assert f"cycle_{verb} for {stream_id} published" in out.stdout

    async def read() -> list[CycleCommand]:
        bus = await open_bus(common, "t")
        sub = await bus.js.pull_subscribe(subjects.stored("control", stream_id), durable="t-cli")
        msgs = await sub.fetch(3, timeout=5)
        await bus.close()
        return [CycleCommand.model_validate_json(m.data) for m in msgs]

    commands = asyncio.run(read())
    assert [c.command for c in commands] == ["cycle_start", "cycle_stop", "cycle_abort"]
    assert {c.source for c in commands} == {"cli"}
    assert {c.reason for c in commands} == {"from the test"}


async def test_alert_rules_load_from_a_file_with_errors_named(
    common: CommonSettings, tmp_path
) -> None:
    """``vertac alerts load`` asks the alerts service, which owns the rules, to keep each one;
    without that service it says so and fails."""
    from schemas.messages import AlertRule
    from services.common.runtime import open_bus
    from tests.conftest import settings_owners

    env = {**os.environ, "VERTAC_NATS_URL": common.nats_url}
    run = [sys.executable, "-m", "services.cli", "alerts", "load"]
    example = str(REPO / "deploy" / "alert-rules.example.yaml")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*run, *args], env=env, cwd=REPO, capture_output=True, text=True,
                              check=False)  # fmt: skip

    out = await asyncio.to_thread(cli, example)  # no alerts service on the bus
    assert out.returncode == 2
    assert "no alerts service answers" in out.stderr
    async with settings_owners(common):
        out = await asyncio.to_thread(cli, example)
        assert out.returncode == 0, out.stderr
        assert "loaded 8 alert rules" in out.stdout
        bad = tmp_path / "bad.yaml"
        bad.write_text("- {stream_id: s, rule_id: r, kind: limit, sensor_id: p, hi: 5, hihi: 1}\n")
        out = await asyncio.to_thread(cli, str(bad))
    assert out.returncode == 2
    assert "rule 0 (r)" in out.stderr
    assert "hihi must not be below hi" in out.stderr

    bus = await open_bus(common, "t")
    kv = await bus.js.key_value(subjects.KV_ALERT_RULES)
    keys = sorted(await kv.keys())
    entry = await kv.get("sim-01.pressure-high")
    await bus.close()
    assert AlertRule.model_validate_json(entry.value).hihi == 180
    assert len(keys) == 8


def test_bus_init_on_a_server_with_little_storage_names_the_setting(tmp_path) -> None:
    from services.embedded import free_port, nats_server_binary, wait_for_port

    port = free_port()
    conf = tmp_path / "small.conf"
    store = tmp_path / "js"
    conf.write_text(f'port: {port}\njetstream {{ store_dir: "{store}", max_file_store: 1GB }}\n')
    server = subprocess.Popen([nats_server_binary(), "-c", str(conf)])
    try:
        wait_for_port("127.0.0.1", port, 20, server)
        env = {k: v for k, v in os.environ.items() if not k.endswith("_MAX_BYTES")}
        env["VERTAC_NATS_URL"] = f"nats://127.0.0.1:{port}"  # the default limits
        out = subprocess.run(
            [sys.executable, "-m", "services.cli", "bus", "init"],
            env=env, cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "VERTAC_SAMPLES_MAX_BYTES" in out.stderr
