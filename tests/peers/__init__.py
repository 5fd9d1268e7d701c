"""Protocol servers of other projects, run with Node.js: node-opcua and modbus-serial
(``tests/peers/package.json``; ``make install`` runs ``npm ci`` here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not installed (the npm protocol peers need it)"
    if not (HERE / "node_modules" / "node-opcua").is_dir():
        return "the npm protocol peers are not installed (cd tests/peers && npm ci)"
    return None


class NodePeer:
    """``node SCRIPT PORT``, started and waited for until it prints ``listening``."""

    def __init__(self, script: str, port: int) -> None:
        self.script = script
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 90) -> NodePeer:
        reason = _missing()
        if reason is not None:
            if os.environ.get("VERTAC_NO_SKIPS"):
                pytest.fail(reason)
            pytest.skip(reason)
        self.proc = subprocess.Popen(
            ["node", str(HERE / self.script), str(self.port)],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("listening"):
                return self
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"{self.script} exited with {self.proc.returncode}")
        self.stop()
        raise RuntimeError(f"{self.script} did not start within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
