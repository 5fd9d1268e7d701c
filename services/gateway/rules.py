"""Rules the gateway enforces that JSON Schema cannot state: one between two fields or
parameters, or one about data the server holds. A request the OpenAPI's schemas allow may still
be refused with 422 for one of these; each operation's 422 response in the OpenAPI names its
rules, and the OpenAPI fuzz test expects that 422 for these operations only."""

from __future__ import annotations

from typing import Final

RULES: Final[dict[tuple[str, str], str]] = {
    ("GET", "/api/live/stream/{stream_id}/samples"): "start must be before end.",
    ("GET", "/api/live/stream/{stream_id}/cycles"): (
        "cursor must be one this API gave (the X-Next-Cursor of a page)."
    ),
    ("POST", "/api/auth/tokens"): "an edge token names at least one stream.",
    ("POST", "/api/live/batch"): (
        "every value names a sensor the stream registers; a NaN or infinite value needs a "
        "quality below 192."
    ),
    ("POST", "/api/live/register"): "sensor ids (v0.2.0: sensor names) do not repeat.",
    ("POST", "/api/live/datasets/{dataset}/import"): (
        "the body is a CSV or Parquet file, or a zip of them, holding at least one cycle with "
        "a time column, whose sensors the stream registers."
    ),
    ("POST", "/api/live/stream/{stream_id}/references"): (
        "give either cycle_ids or dataset, of completed cycles of the stream."
    ),
    ("POST", "/api/live/stream/{stream_id}/references/dry-run"): (
        "give either cycle_ids or reference_version, of the stream's cycles and references."
    ),
    ("PUT", "/api/live/stream/{stream_id}/alert-rules/{rule_id}"): (
        "each kind needs its fields (limit: sensor_id and one of hi, hihi, lo, lolo; rate: "
        "sensor_id, max_rate; flatline: sensor_id, flat_s; envelope: sensor_id; data_gap: "
        "gap_s; health: health_below; contribution: contribution_above); hihi not below hi, "
        "lolo not above lo; the sensor is one the stream registers."
    ),
    ("PUT", "/api/live/stream/{stream_id}/cycle-config"): (
        "a signal trigger needs signal_sensor, start_above and stop_below, with stop_below not "
        "above start_above; min_duration_s below max_duration_s."
    ),
}


def document(openapi: dict[str, object]) -> None:
    """Name each operation's rules in its 422 response of the OpenAPI document."""
    paths = openapi.get("paths")
    assert isinstance(paths, dict)
    for (method, path), rule in RULES.items():
        operation = paths[path][method.lower()]
        responses = operation.setdefault("responses", {})
        entry = responses.setdefault("422", {"description": ""})
        entry["description"] = f"Not valid, also by this rule: {rule}"
