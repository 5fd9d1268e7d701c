"""Contracts: committed JSON Schemas and AsyncAPI match the code; subjects are built safely."""

from __future__ import annotations

import pytest

from schemas import asyncapi, export, messages, subjects, typescript


def test_committed_json_schemas_match_the_models() -> None:
    wanted = export.render()
    committed = {
        p.name: p.read_text() for p in export.JSON_DIR.glob("*.json") if p.name != "asyncapi.json"
    }
    assert set(committed) == set(wanted), "run `make schemas` and commit schemas/json/"
    for name, text in wanted.items():
        assert committed[name] == text, f"{name} drifted: run `make schemas` and commit it"


def test_committed_asyncapi_matches_the_bus() -> None:
    committed = (export.JSON_DIR / "asyncapi.json").read_text()
    assert committed == asyncapi.render(), "run `make schemas` and commit schemas/json/"


def test_the_dashboards_types_are_generated_from_the_contracts() -> None:
    committed = typescript.TARGET.read_text()
    assert committed == typescript.render(), (
        "services/gateway/web/src/contracts.ts drifted: run `make schemas` and commit it"
    )


def test_the_generated_types_follow_the_contracts_fields() -> None:
    text = typescript.render()
    body = text[text.index("export interface CycleSummary {") :].split("}", 1)[0]
    fields = {line.strip().split(":")[0].rstrip("?") for line in body.splitlines()[1:]}
    assert fields == set(messages.CycleSummary.model_fields)
    assert "  risk_class: string | null;" in body
    assert 'severity: "info" | "warning" | "critical";' in text


def test_every_message_model_carries_a_version() -> None:
    from schemas import messages

    bus_models = [
        messages.FrameJson, messages.StreamRegistered, messages.CycleCommand,
        messages.CycleStateChanged, messages.AnalysisCompleted, messages.AlertChanged,
        messages.DeadLetter, messages.StreamRegistration,
    ]  # fmt: skip
    for model in bus_models:
        assert model.model_fields["version"].default == 1, model.__name__


def test_subjects_are_built_from_one_helper() -> None:
    assert subjects.samples("press-01") == "vertac.samples.press-01"
    assert subjects.cycles("press-01", "completed") == "vertac.cycles.press-01.completed"
    assert subjects.alerts("p", "critical") == "vertac.alerts.p.critical"
    assert subjects.stream_of("vertac.control.p_2") == "p_2"
    assert subjects.dedup_id("p", 7) == "p:7"


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "a*", "a>", "x" * 65])
def test_stream_ids_that_break_subjects_are_refused(bad: str) -> None:
    with pytest.raises(subjects.InvalidStreamId):
        subjects.samples(bad)


def test_the_docs_sites_api_pages_match_the_openapi_and_asyncapi_documents() -> None:
    from services import apidocs

    for path, text in apidocs.render().items():
        assert path.exists(), f"{path} is missing: run `make schemas`"
        assert path.read_text() == text, f"{path} is stale: run `make schemas` and commit docs/api/"
