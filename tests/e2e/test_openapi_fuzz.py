"""Schemathesis, a fuzzer we did not write, against the OpenAPI of the system ``vertac run``
starts (defaults: auth on, the simulated machine), with every check and every phase (examples,
coverage, fuzzing, stateful) and a bounded number of examples per operation: no 5xx, every
status and header documented, bodies as declared, auth not ignored, invalid data refused and
valid data accepted.

Valid data may be refused with 422 only by a rule JSON Schema cannot state (between two fields
or parameters, or about data the server holds): :data:`services.gateway.rules.RULES` lists them
per operation, the OpenAPI names them in those operations' 422 responses, and the fuzzer's
configuration expects that 422 for those operations and no other.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.embedded import free_port
from services.gateway.rules import RULES
from tests.conftest import REPO, refusals

pytestmark = pytest.mark.e2e
EXAMPLES = 20  # per operation and phase: about 2,500 requests, 30-60 s on a busy 2-core box


def _wait(check, timeout: float = 120):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def fuzz_config() -> str:
    """Per operation with a rule of :data:`RULES`: 422 is an expected answer to valid data."""
    expected = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
    blocks = [
        f'[[operations]]\ninclude-method = "{method}"\ninclude-path = "{path}"\n'
        f"checks.positive_data_acceptance.expected-statuses = {json.dumps(expected)}\n"
        for method, path in RULES
    ]
    return "\n".join(blocks)


@pytest.mark.timeout(1500)
def test_schemathesis_finds_nothing_in_the_openapi_of_the_running_system(tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        reason = "schemathesis is not installed (make install)"
        if os.environ.get("VERTAC_NO_SKIPS"):
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    data = tmp_path / "data"
    args = [
        sys.executable, "-m", "services.cli", "run", "--data-dir", str(data),
        "--port", str(port), "--nats-port", str(free_port()), "--nats-monitor-port", str(free_port()),
        "--pg-port", str(free_port()),
        "--metrics-base-port", str(free_port()),
    ]  # fmt: skip
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        token_file = data / "admin.token"
        token = _wait(lambda: token_file.is_file() and token_file.read_text().strip())

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/api/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy)
        report = tmp_path / "schemathesis"
        config = tmp_path / "schemathesis.toml"
        config.write_text(fuzz_config())
        run = subprocess.run(
            [st, "--config-file", str(config), "run", f"{base}/openapi.json",
             "-H", f"Authorization: Bearer {token}", "--checks", "all",
             "--max-examples", str(EXAMPLES), "--seed", "1", "--generation-deterministic",
             "--workers", "2", "--request-timeout", "60",
             "--report-dir", str(report), "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
        assert "Stateful" in run.stdout and "passed" in run.stdout
        # the gateway is still healthy after it all
        assert healthy()
        # and no service was refused anything by the bus on the way
        assert refusals(data / "nats" / "nats-server.log") == []
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
