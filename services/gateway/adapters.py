"""The gateway's outside systems: the bus (publish, KV, subscriptions) and PostgreSQL reads."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import nats.errors
import psycopg
from nats.aio.client import Client
from nats.js.api import PubAck
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from psycopg.rows import class_row, dict_row
from psycopg_pool import AsyncConnectionPool

from edge.client import Bus, ask
from schemas import subjects
from schemas.frames import CONTENT_TYPE_BINARY, Frame, encode_binary, unpack
from schemas.messages import (
    AlertRule,
    AnalysisCompleted,
    CycleCommand,
    CycleConfig,
    CycleDetail,
    CycleSummary,
    DatasetEntry,
    DatasetInfo,
    SiteLinkStatus,
    StreamRegistered,
    Trend,
)
from services.common import directget
from services.common.failures import is_transient
from services.common.records import config_or_default, current_cycle
from services.common.streams import read_frames

SITE_SILENT_S = 5.0  # a site's streams not heard from this long (linked: under 1 s): cut off


@dataclass(frozen=True, slots=True)
class Persisted:
    frames: int
    samples: int
    last_seq: int | None
    last_sample_at: datetime | None


class BusPort:
    """What the gateway does on the bus."""

    def __init__(
        self,
        bus: Bus,
        kv_streams: KeyValue,
        kv_seq: KeyValue,
        kv_config: KeyValue,  # read only: the cycles service writes it
        uploads: ObjectStore,
    ) -> None:
        self.bus = bus
        self.kv_streams = kv_streams
        self.kv_seq = kv_seq
        self.kv_config = kv_config
        self.uploads = uploads

    @classmethod
    async def open(cls, bus: Bus) -> BusPort:
        return cls(
            bus,
            await bus.js.key_value(subjects.KV_STREAMS),
            await bus.js.key_value(subjects.KV_SEQ),
            await bus.js.key_value(subjects.KV_CYCLE_CONFIG),
            await bus.js.object_store(subjects.OBJ_UPLOADS),
        )

    async def cycle_config(self, stream_id: str) -> CycleConfig:
        try:
            entry = await self.kv_config.get(stream_id)
        except (KeyNotFoundError, NotFoundError):
            return CycleConfig()
        return config_or_default(stream_id, entry.value)

    async def recording(self, name: str) -> Frame | None:
        """A cycle's recording, read directly (no consumer per read), or None."""
        try:
            data = await directget.read_object(self.bus.nc, subjects.OBJ_CYCLES, name)
        except directget.ObjectMissing:
            return None
        return unpack(data)

    async def recent_frames(self, stream_id: str, seconds: float, limit: int) -> list[Frame]:
        """The stream's frames JetStream stored in the last ``seconds`` (at most ``limit``)."""
        since = datetime.now(UTC) - timedelta(seconds=seconds)
        return await read_frames(self.bus.nc, stream_id, since=since, limit=limit)

    async def reference_request(self, stream_id: str, op: str, body: bytes) -> tuple[int, bytes]:
        """Ask the analysis service; (status, JSON body)."""
        return await self.request(subjects.references(stream_id, op), body, 120)

    async def request(self, subject: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        """Ask the service that answers ``subject``; (status, JSON body). Waits up to 10 s
        for a responder (one being restarted)."""
        return await ask(self.bus.nc, subject, body, timeout_s)

    async def put_upload(self, data: bytes) -> str:
        """Keep an import's file in ``vertac_uploads`` for the cycles service; its name."""
        name = f"import-{uuid.uuid4().hex}"
        await self.uploads.put(name, data)
        return name

    async def drop_upload(self, name: str) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.uploads.delete(name)

    async def publish_frame(self, frame: Frame, msg_id: str, within_s: float = 10.0) -> PubAck:
        """Publish until JetStream acknowledges, for at most ``within_s`` (a leader change or a
        short outage passes unnoticed); then the last bus error is raised (the caller answers
        503, and the client's retry with the same batch id is stored once)."""
        payload = encode_binary(frame, shuffled=True)  # the storage form: stored as sent
        headers = {
            subjects.HEADER_CONTENT_TYPE: CONTENT_TYPE_BINARY,
            subjects.HEADER_MSG_ID: msg_id,
        }
        deadline = time.monotonic() + within_s
        delay = 0.1
        while True:
            try:
                return await self.bus.js.publish(
                    subjects.samples(frame.stream_id), payload, headers=headers, timeout=5
                )
            except nats.errors.Error as exc:
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def publish_command(self, command: CycleCommand) -> PubAck:
        """The command on the stream's control subject; at central, a site's stream's on the
        site's (``vertac.<site>.control.<stream_id>``, with the id the site knows)."""
        site = subjects.site_of(command.stream_id)
        if site is None:
            subject = subjects.control(command.stream_id)
        else:
            subject = subjects.site_control(*site)
            command = command.model_copy(update={"stream_id": site[1]})
        return await self.bus.js.publish(
            subject,
            command.model_dump_json().encode(),
            headers={subjects.HEADER_CONTENT_TYPE: "application/json"},
            timeout=5,
        )

    async def publish_to_site(self, subject: str, body: bytes) -> PubAck:
        """At central: a request for a site, kept in central's commands for the site (which
        the site sources within the hour, link or no link)."""
        return await self.bus.js.publish(
            subject, body, headers={subjects.HEADER_CONTENT_TYPE: "application/json"}, timeout=5
        )

    async def cycle_state(self, stream_id: str) -> str:
        """``running`` while the stream's newest cycle event says a cycle is under way, else
        ``idle`` (read from the cycles service's events, not its private state)."""
        event = await current_cycle(self.bus.nc, stream_id)
        return "running" if event is not None and event.state == "running" else "idle"

    async def streams(self) -> list[StreamRegistered]:
        """Every valid registration, by stream id (read directly: no server state per read)."""
        entries = await directget.latest(self.bus.nc, subjects.KV_STREAMS)
        valid = directget.valid_records(
            subjects.KV_STREAMS, entries, StreamRegistered, lambda r: r.stream_id
        )
        return [valid[k] for k in sorted(valid)]

    async def site_link(self, site: str) -> SiteLinkStatus:
        """How far central has taken site ``site``'s streams (read from the stream's info: no
        server state per read)."""
        try:
            info = await self.bus.js.stream_info(subjects.site_stream(site))
        except NotFoundError:
            return SiteLinkStatus(site=site, state="not_linked")
        sources = info.sources or []
        errors = [str((s.error or {}).get("description", s.error)) for s in sources if s.error]
        contacts = [s.active for s in sources if s.active is not None and s.active >= 0]
        last = max(contacts) / 1e9 if len(contacts) == len(sources) and contacts else None
        lag = sum(s.lag or 0 for s in sources) if contacts else None
        if errors or last is None or last >= SITE_SILENT_S:
            state = "cut_off"
        else:
            state = "linked" if lag == 0 else "catching_up"
        return SiteLinkStatus(
            site=site, state=state, lag=lag, last_contact_s=last,
            messages=info.state.messages, error="; ".join(errors) or None,
        )  # fmt: skip

    async def healthy(self) -> str:
        if not self.bus.nc.is_connected:
            return "disconnected"
        try:
            await self.bus.js.account_info()
        except Exception as exc:  # any failure means the bus is not usable; report it
            return f"error: {exc}"
        return "ok"


class Database:
    """Read-only queries of the gateway."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def persisted(self, stream_id: str) -> Persisted:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT frames, samples, last_seq, last_sample_ns FROM live_stream_stats"
                " WHERE stream_id = %s",
                (stream_id,),
            )
            row = await cur.fetchone()
        if row is None:
            return Persisted(0, 0, None, None)
        last = datetime.fromtimestamp(row[3] / 1e9, UTC) if row[3] is not None else None
        return Persisted(int(row[0]), int(row[1]), row[2], last)

    async def healthy(self) -> str:
        try:
            async with self.pool.connection(timeout=3) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, TimeoutError) as exc:
            return f"error: {exc}"
        return "ok"


# a cycle's summary columns and, from its latest analysis, the score, the learned model's
# statistics and the trend (the full result only where it is asked for: it is large)
_SUMMARY = """
SELECT c.cycle_id, c.stream_id, c.cycle_no, c.state, c.started_at, c.ended_at, c.duration_s,
       c.end_reason, c.samples, c.frames, c.gaps, c.completeness,
       d.health_score, d.risk_class, d.reference_version,
       d.t2, d.t2_limit_99, d.spe, d.spe_limit_99, d.trend, d.level_ratio_99"""
_LATEST = """
FROM live_cycles c
LEFT JOIN LATERAL (
    SELECT health_score, risk_class, reference_version,
           (result->'model'->>'t2')::float8 AS t2,
           (result->'model'->>'t2_limit_99')::float8 AS t2_limit_99,
           (result->'model'->>'spe')::float8 AS spe,
           (result->'model'->>'spe_limit_99')::float8 AS spe_limit_99,
           result->'trend' AS trend,
           greatest((result->'model'->'level'->>'t2')::float8
                    / nullif((result->'model'->'level'->>'t2_limit_99')::float8, 0),
                    (result->'model'->'level'->>'spe')::float8
                    / nullif((result->'model'->'level'->>'spe_limit_99')::float8, 0))
               AS level_ratio_99"""
_OF_CYCLE = """
    FROM live_deviations
    WHERE cycle_id = c.cycle_id ORDER BY created_at DESC LIMIT 1
) d ON true
"""
_CYCLE_LIST = (
    _SUMMARY
    + _LATEST
    + _OF_CYCLE
    + """WHERE c.stream_id = %(s)s
  AND (%(start)s::timestamptz IS NULL OR c.started_at >= %(start)s)
  AND (%(end)s::timestamptz IS NULL OR c.started_at < %(end)s)
  AND (%(at)s::timestamptz IS NULL OR (c.started_at, c.cycle_id) < (%(at)s, %(id)s))
ORDER BY c.started_at DESC, c.cycle_id DESC LIMIT %(n)s
"""
)
_CYCLE_ONE = (
    _SUMMARY
    + ", d.result, c.recording"
    + _LATEST
    + ", result"
    + _OF_CYCLE
    + "WHERE c.cycle_id = %s\n"
)


def _summary(r: tuple[Any, ...]) -> CycleSummary:
    return CycleSummary(
        cycle_id=r[0],
        stream_id=r[1],
        cycle_no=r[2],
        state=r[3],
        started_at=r[4],
        ended_at=r[5],
        duration_s=r[6],
        end_reason=r[7],
        samples=r[8] or {},
        frames=r[9],
        gaps=r[10],
        completeness=r[11],
        health_score=r[12],
        risk_class=r[13],
        reference_version=r[14],
        t2=r[15],
        t2_limit_99=r[16],
        spe=r[17],
        spe_limit_99=r[18],
        trend=Trend.model_validate(r[19]) if r[19] else None,
        level_ratio_99=r[20],
    )


class CycleQueries:
    """Cycles and their analyses, read for the REST API."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def list(
        self,
        stream_id: str,
        limit: int,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[CycleSummary]:
        """Newest first: started in ``start``..``end``, and older than the cycle ``after``
        names (its start and id: a page's last cycle)."""
        at, cycle_id = after if after is not None else (None, "")
        params = {"s": stream_id, "start": start, "end": end, "at": at, "id": cycle_id,
                  "n": limit}  # fmt: skip
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CYCLE_LIST, params)
            return [_summary(r) for r in await cur.fetchall()]

    async def state(self, stream_id: str) -> str:
        """``running`` while the stream's newest stored cycle runs, else ``idle`` (what central
        knows of a site's stream: the site's cycle events, stored as they came)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT state FROM live_cycles WHERE stream_id = %s"
                " ORDER BY started_at DESC LIMIT 1",
                (stream_id,),
            )
            row = await cur.fetchone()
        return "running" if row is not None and row[0] == "running" else "idle"

    async def one(self, cycle_id: str) -> tuple[CycleDetail, str | None] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CYCLE_ONE, (cycle_id,))
            r = await cur.fetchone()
        if r is None:
            return None
        analysis = AnalysisCompleted.model_validate(r[21]) if r[21] else None
        return CycleDetail(cycle=_summary(r), analysis=analysis), r[22]


class AlertQueries:
    """Alerts and their history, read for the REST API."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def find(
        self,
        stream_id: str | None,
        state: str | None,
        severity: str | None,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Alerts newest first; with ``since``/``until`` only those active at some time in
        between (raised before ``until``, not cleared before ``since``)."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT alert_id, stream_id, rule, rule_kind, sensor_id, severity, state, message,"
                " occurrences, value, raised_at, acknowledged_at, acknowledged_by, comment,"
                " cleared_at FROM live_alerts"
                " WHERE (%(s)s::text IS NULL OR stream_id = %(s)s)"
                " AND (%(st)s::text IS NULL OR state = %(st)s)"
                " AND (%(sv)s::text IS NULL OR severity = %(sv)s)"
                " AND (%(u)s::timestamptz IS NULL OR raised_at <= %(u)s)"
                " AND (%(f)s::timestamptz IS NULL OR cleared_at IS NULL OR cleared_at >= %(f)s)"
                " ORDER BY raised_at DESC LIMIT %(n)s",
                {
                    "s": stream_id,
                    "st": state,
                    "sv": severity,
                    "n": limit,
                    "f": since,
                    "u": until,
                },
            )
            return await cur.fetchall()

    async def history(self, alert_id: str) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT state, at, occurrences, severity, message, value, by_user, comment"
                " FROM live_alert_history WHERE alert_id = %s ORDER BY at, occurrences",
                (alert_id,),
            )
            return await cur.fetchall()


_DATASET_ENTRIES = """
SELECT e.dataset, e.cycle_id, e.stream_id, e.label, e.note, e.added_at, d.health_score
FROM live_dataset_cycles e
LEFT JOIN LATERAL (
    SELECT health_score FROM live_deviations
    WHERE cycle_id = e.cycle_id ORDER BY created_at DESC LIMIT 1
) d ON true
WHERE e.dataset = %s ORDER BY e.added_at, e.cycle_id
"""


_DATASETS = """
SELECT d.dataset, count(*) AS cycles, max(d.added_at) AS updated_at,
       array_agg(DISTINCT d.stream_id ORDER BY d.stream_id) AS streams,
       (SELECT jsonb_object_agg(label, n) FROM (
            SELECT label, count(*) AS n FROM live_dataset_cycles
            WHERE dataset = d.dataset GROUP BY label) l) AS labels
FROM live_dataset_cycles d GROUP BY d.dataset ORDER BY d.dataset
"""


class Datasets:
    """Named, labelled collections of recorded cycles, as the cycles service publishes them
    (view ``live_dataset_cycles``); changes go to it as dataset requests."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def stream_of(self, dataset: str, cycle_id: str) -> str | None:
        """The stream of a cycle in a dataset, or None when it is not in it."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT stream_id FROM live_dataset_cycles WHERE dataset = %s AND cycle_id = %s",
                (dataset, cycle_id),
            )
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def entries(self, dataset: str) -> list[DatasetEntry]:
        rows = class_row(DatasetEntry)
        async with self.pool.connection() as conn, conn.cursor(row_factory=rows) as cur:
            await cur.execute(_DATASET_ENTRIES, (dataset,))
            return await cur.fetchall()

    async def all(self) -> list[DatasetInfo]:
        rows = class_row(DatasetInfo)
        async with self.pool.connection() as conn, conn.cursor(row_factory=rows) as cur:
            await cur.execute(_DATASETS)
            return await cur.fetchall()


class AlertRulesKv:
    """Alert rules in KV ``vertac_alert_rules``, read directly; the alerts service owns and
    writes them (the gateway asks it to)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def of_stream(self, stream_id: str) -> list[AlertRule]:
        """The stream's valid rules, read directly (no server state per read)."""
        entries = await directget.latest(self.nc, subjects.KV_ALERT_RULES, f"{stream_id}.")
        valid = directget.valid_records(
            subjects.KV_ALERT_RULES, entries, AlertRule, lambda r: f"{r.stream_id}.{r.rule_id}"
        )
        return [valid[k] for k in sorted(valid)]
