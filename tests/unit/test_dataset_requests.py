"""Dataset requests as the cycles service answers them, before any server is touched: the
status and the field of every refusal a client can cause."""

from __future__ import annotations

import json
from typing import Any

from services.common.responder import RequestError, answer
from services.cycles.datasets import DatasetService


class Untouchable:
    """A pool or bus that fails the test when used: these requests are refused before."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} was used")


async def ask(stream_id: str, op: str, body: object) -> tuple[int, dict[str, Any]]:
    service = DatasetService(Untouchable(), Untouchable())  # type: ignore[arg-type]
    status, data = await service.handle(stream_id, op, json.dumps(body).encode())
    return status, json.loads(data)


async def test_a_refused_dataset_request_says_why_and_where() -> None:
    status, body = await ask("press-1", "rename", {"dataset": "d"})
    assert status == 404 and "add, remove, import" in body["error"]
    status, body = await ask("press 1", "add", {"dataset": "d", "cycle_id": "c"})
    assert status == 400 and body["details"][0]["field"] == "stream_id"
    status, body = await ask("press-1", "add", {"dataset": "no spaces", "cycle_id": "c"})
    assert status == 422 and body["details"][0]["field"] == "dataset"
    status, body = await ask("press-1", "import", {"dataset": "d"})
    assert status == 422 and body["details"][0]["field"] == "upload"


async def test_the_responder_answers_a_refusal_with_its_status_and_field() -> None:
    async def refuse(_: object) -> None:
        raise RequestError(409, "busy elsewhere", "cycle_id")

    from schemas.messages import DatasetRequest

    status, data = await answer({"x": (DatasetRequest, refuse)}, "x", b'{"dataset": "d"}', "t")
    assert status == 409
    assert json.loads(data) == {
        "error": "busy elsewhere",
        "details": [{"field": "cycle_id", "message": "busy elsewhere"}],
    }
