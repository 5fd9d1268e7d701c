"""Routes of datasets: labelled collections of recorded cycles, import and export."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Literal

from fastapi import (
    APIRouter,
    Depends,
    Query,
    Request,
)
from fastapi.responses import Response

from schemas import subjects
from schemas.messages import (
    DatasetEntry,
    DatasetEntryBody,
    DatasetImported,
    DatasetInfo,
    DatasetRequest,
)
from services.gateway.auth import Admin, Operator, role
from services.gateway.bodies import OffLoopJson
from services.gateway.dataset_export import ExportedCycle, export_parquet, export_zip
from services.gateway.history import PARQUET
from services.gateway.logic import (
    recording_csv,
)
from services.gateway.report import analysis_csv
from services.gateway.state import (
    CONFLICT,
    DATASET_NAME,
    IMPORT_MAX_BYTES,
    ApiError,
    CycleIdPath,
    DatasetPath,
    gw,
    valid_stream_id,
)

log = logging.getLogger(__name__)
router = APIRouter(
    route_class=OffLoopJson, tags=["datasets"], dependencies=[Depends(role("viewer"))]
)


def valid_dataset(name: str) -> str:
    if not re.fullmatch(DATASET_NAME, name):
        raise ApiError(
            422,
            f"dataset name {name!r}: 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            "dataset",
        )
    return name


async def ask_cycles(
    request: Request, stream_id: str, op: str, body: DatasetRequest, timeout_s: float = 30
) -> bytes:
    """A dataset request to the cycles service (which owns cycles and datasets)."""
    subject = subjects.datasets(stream_id, op)
    return await gw(request).ask("cycles", subject, body.model_dump_json().encode(), timeout_s)


@router.get("/api/live/datasets", response_model=list[DatasetInfo])
async def list_datasets(request: Request) -> list[DatasetInfo]:
    """Every dataset with its size, streams and label counts."""
    return await gw(request).datasets.all()


@router.get("/api/live/datasets/{dataset}", response_model=list[DatasetEntry])
async def get_dataset(dataset: DatasetPath, request: Request) -> list[DatasetEntry]:
    """The cycles of one dataset, oldest first, with label, note and health score."""
    entries = await gw(request).datasets.entries(valid_dataset(dataset))
    if not entries:
        raise ApiError(404, f"dataset {dataset!r} is empty or unknown", "dataset")
    return entries


@router.post(
    "/api/live/datasets/{dataset}/cycles",
    status_code=201,
    response_model=DatasetEntry,
    responses=CONFLICT,
)
async def add_to_dataset(
    dataset: DatasetPath, body: DatasetEntryBody, request: Request, who: Operator
) -> DatasetEntry:
    """Save a finished cycle into a dataset (created on first use) with a label; saving it
    again updates label and note. Its samples stay in the recording store."""
    g = gw(request)
    detail, _ = await g.cycle(body.cycle_id, "body.cycle_id")
    req = DatasetRequest(
        dataset=valid_dataset(dataset), cycle_id=body.cycle_id, label=body.label, note=body.note
    )
    entry = DatasetEntry.model_validate_json(
        await ask_cycles(request, detail.cycle.stream_id, "add", req)
    )
    await g.audit.record(who, "dataset.add", f"{dataset}/{body.cycle_id}", None, body)
    return entry


@router.delete("/api/live/datasets/{dataset}/cycles/{cycle_id}", status_code=204)
async def remove_from_dataset(
    dataset: DatasetPath, cycle_id: CycleIdPath, request: Request, who: Operator
) -> Response:
    """Take a cycle out of a dataset (the cycle itself is kept)."""
    g = gw(request)
    name = valid_dataset(dataset)
    stream_id = await g.datasets.stream_of(name, cycle_id)
    if stream_id is None:
        raise ApiError(404, f"cycle {cycle_id!r} is not in dataset {dataset!r}", "cycle_id")
    await ask_cycles(request, stream_id, "remove", DatasetRequest(dataset=name, cycle_id=cycle_id))
    await g.audit.record(who, "dataset.remove", f"{dataset}/{cycle_id}")
    return Response(status_code=204)


@router.post("/api/live/datasets/{dataset}/import", status_code=201, response_model=DatasetImported)
async def import_dataset(
    dataset: DatasetPath,
    request: Request,
    who: Admin,
    stream_id: Annotated[
        str | None,
        Query(description="Stream the cycles belong to; default batch-<dataset> ('.' as '-')."),
    ] = None,
    label: Annotated[str, Query(max_length=64)] = "",
    filename: Annotated[str, Query(max_length=200)] = "cycle.csv",
) -> DatasetImported:
    """Import recorded cycles from a file in the body: CSV, Parquet, or a zip of such files
    (one cycle per file, or a ``cycle_id`` column). Each is stored like a live cycle and
    filed under the dataset; importing the same files again updates them."""
    g = gw(request)
    name = valid_dataset(dataset)
    target = valid_stream_id(stream_id) if stream_id else subjects.dataset_stream_id(name)
    chunks, size = [], 0
    async for chunk in request.stream():  # stop reading once over the limit
        size += len(chunk)
        if size > IMPORT_MAX_BYTES:
            raise ApiError(413, f"at most {IMPORT_MAX_BYTES // 2**20} MiB per import", "body")
        chunks.append(chunk)
    upload = await g.port.put_upload(b"".join(chunks))
    del chunks
    req = DatasetRequest(dataset=name, label=label, upload=upload, filename=filename)
    try:
        imported = DatasetImported.model_validate_json(
            await ask_cycles(request, target, "import", req, g.settings.import_timeout_s)
        )
    finally:
        await g.port.drop_upload(upload)
    after = {"stream_id": target, "cycles": [c.cycle_id for c in imported.cycles], "label": label}
    await g.audit.record(who, "dataset.import", name, None, after)
    return imported


@router.get(
    "/api/live/datasets/{dataset}/export",
    response_model=None,
    responses={200: {"content": {PARQUET: {}, "application/zip": {}}}},
)
async def export_dataset(
    dataset: DatasetPath,
    request: Request,
    format: Annotated[Literal["parquet", "csv"], Query()] = "parquet",
) -> Response:
    """The whole dataset as one file: Parquet (a row per sample with each cycle's score;
    every analysis in the file's metadata) or a zip of CSVs (a samples CSV per cycle, its
    analysis, and an index)."""
    g = gw(request)
    name = valid_dataset(dataset)
    entries = await g.datasets.entries(name)
    if not entries:
        raise ApiError(404, f"dataset {dataset!r} is empty or unknown", "dataset")
    cycles = []
    details = {}
    for e in entries:
        detail, rec = await g.cycle(e.cycle_id)
        details[e.cycle_id] = detail
        frame = await g.port.recording(rec) if rec else None
        analysis = detail.analysis.model_dump(mode="json") if detail.analysis else None
        cycles.append(ExportedCycle(e.cycle_id, e.stream_id, e.label, frame, analysis))
    if format == "parquet":
        body = await asyncio.to_thread(export_parquet, name, cycles)
        media, suffix = "application/vnd.apache.parquet", "parquet"
    else:
        body = await asyncio.to_thread(
            export_zip, name, cycles, recording_csv,
            lambda a: analysis_csv(details[a["cycle_id"]]),
        )  # fmt: skip
        media, suffix = "application/zip", "zip"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}.{suffix}"'},
    )
