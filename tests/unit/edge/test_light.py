"""The edge agent imports only ``edge`` and ``schemas``: an edge box installs no server packages
(FastAPI, psycopg, numba, matplotlib, tslearn)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

EDGE_MODULES = [
    "edge.cli", "edge.agent", "edge.check", "edge.config", "edge.sources",
    "edge.sources.modbus", "edge.sources.files", "edge.sources.opcua", "edge.sources.mqtt",
    "edge.sources.sparkplug", "edge.buffer", "edge.publisher", "edge.run", "edge.replay",
    "edge.simulator",
]  # fmt: skip
SERVER_PACKAGES = ("services", "fastapi", "psycopg", "numba", "matplotlib", "tslearn", "faststream")


def test_the_edge_imports_no_server_package() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {EDGE_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(SERVER_PACKAGES), sorted(loaded & set(SERVER_PACKAGES))
