"""Export every contract as JSON Schema into ``schemas/json/`` (``python -m schemas.export``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.compat import LegacyBatch, LegacyRegistration
from schemas.messages import EXPORTED

JSON_DIR = Path(__file__).parent / "json"


def render() -> dict[str, str]:
    """File name to JSON Schema text, for every exported model."""
    out = {}
    models: tuple[type[BaseModel], ...] = (*EXPORTED, LegacyRegistration, LegacyBatch)
    for model in models:
        schema = model.model_json_schema(mode="validation")
        out[f"{model.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(folder: Path = JSON_DIR) -> list[Path]:
    """Write the schemas and remove files of models that no longer exist."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = render()
    for stale in folder.glob("*.json"):
        if stale.name not in wanted and stale.name != "asyncapi.json":
            stale.unlink()
    written = []
    for name, text in wanted.items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    paths = write()
    sys.stdout.write(f"wrote {len(paths)} schemas to {JSON_DIR}\n")
