"""``vertac run``'s supervisor against real servers and processes: dead servers come back at
once, services restart on their own backoff, independently of each other."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psycopg
import pytest

from services.embedded import free_port
from services.stack import HEALTHY_S, Child, Stack, StackOptions
from tests.chaos.suite import kill_postmaster

pytestmark = pytest.mark.integration


def _stack(tmp_path: Path) -> Stack:
    return Stack(
        StackOptions(data_dir=tmp_path / "vt", nats_port=free_port(),
                     nats_monitor_port=free_port(), pg_port=free_port(), simulate=False)
    )  # fmt: skip


@pytest.mark.timeout(180)
def test_a_killed_nats_server_and_postgresql_are_restarted(tmp_path: Path, capsys) -> None:
    stack = _stack(tmp_path)
    stack.bus_users.ensure()  # the users and permissions nats-server is started with
    stack.nats.start()
    stack.pg.start()
    try:
        assert stack.nats.proc is not None
        stack.nats.proc.send_signal(signal.SIGKILL)
        stack.nats.proc.wait()
        kill_postmaster(stack.pg)
        assert not stack.pg.alive()
        stack._watch_servers()
        assert stack.nats.proc.poll() is None
        assert stack.pg.alive()
        with psycopg.connect(stack.pg.url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        said = capsys.readouterr().out
        assert "nats-server exited with -9; restarting it" in said
        assert "PostgreSQL is not running; restarting it" in said
    finally:
        stack.pg.stop()
        stack.nats.stop()


def test_services_restart_on_their_own_backoff_independently(tmp_path: Path, capsys) -> None:
    stack = _stack(tmp_path)
    env = dict(os.environ)
    crashing = Child("crashing", [sys.executable, "-c", "raise SystemExit(3)"], env,
                     tmp_path / "c.log")  # fmt: skip
    steady = Child("steady", [sys.executable, "-c", "raise SystemExit(4)"], env,
                   tmp_path / "s.log")  # fmt: skip
    stack.children = [crashing, steady]
    for child in stack.children:
        child.start()
        assert child.proc is not None
        child.proc.wait(10)
    crashing.restarts = 5  # a child that crash-looped: its next restart waits 30 s
    now = time.monotonic()
    for child in stack.children:
        stack._watch(child, now)
    assert crashing.restart_at == pytest.approx(now + 30, abs=0.01)
    assert steady.restart_at == pytest.approx(now + 1, abs=0.01)
    stack._watch(steady, now + 1.5)  # the other child is not held up by the crash-looping one
    stack._watch(crashing, now + 1.5)
    assert steady.restarts == 1 and steady.restart_at is None
    assert crashing.restarts == 5 and crashing.restart_at is not None
    assert steady.proc is not None
    steady.proc.wait(10)
    steady.started_at = now - HEALTHY_S - 1  # it ran healthily for a minute before dying
    stack._watch(steady, now + 2)
    assert steady.restarts == 0
    assert steady.restart_at == pytest.approx(now + 3, abs=0.01)
    assert "crashing exited with 3; restarting in 30 s" in capsys.readouterr().out
