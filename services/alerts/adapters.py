"""The alerts service's outside systems: rules and rule state in KV, alert events on the bus,
``live_alerts`` and ``live_alert_history`` in PostgreSQL."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from psycopg_pool import AsyncConnectionPool

from schemas import subjects
from schemas.messages import AlertChanged, AlertRule
from schemas.timeutil import ns_of
from services.alerts.logic import RuleState
from services.common import directget
from services.common.failures import TransientError
from services.common.records import current_cycle
from services.common.references import Reference, reference_from_bytes


def rule_key(stream_id: str, rule_id: str) -> str:
    return f"{stream_id}.{rule_id}"


class Rules:
    """Alert rules in KV ``vertac_alert_rules`` under ``<stream_id>.<rule_id>``, read directly
    (no server state per refresh). A malformed record is skipped with a log line. The alerts
    service alone writes them (operators' changes come as requests)."""

    def __init__(self, nc: Client, kv: KeyValue) -> None:
        self.nc = nc
        self.kv = kv

    async def put(self, rule: AlertRule) -> None:
        await self.kv.put(rule_key(rule.stream_id, rule.rule_id), rule.model_dump_json().encode())

    async def delete(self, stream_id: str, rule_id: str) -> bool:
        """Remove a rule; False when there is none."""
        key = rule_key(stream_id, rule_id)
        try:
            await self.kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            return False
        await self.kv.delete(key)
        return True

    async def all(self) -> list[AlertRule]:
        entries = await directget.latest(self.nc, subjects.KV_ALERT_RULES)
        valid = directget.valid_records(
            subjects.KV_ALERT_RULES, entries, AlertRule, lambda r: rule_key(r.stream_id, r.rule_id)
        )
        return list(valid.values())


class RuleStates:
    """Per-rule state in KV ``vertac_alert_state``, updated with compare-and-set.

    The state last read or written is kept in memory: ``load(rule, cached=True)`` answers from
    it, for the many frames that change nothing. Before anything is recorded or written, the
    engine reads KV again (an acknowledgement may have come through another replica)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._known: dict[str, tuple[RuleState, int | None]] = {}

    async def load(self, rule: AlertRule, cached: bool = False) -> tuple[RuleState, int | None]:
        key = rule_key(rule.stream_id, rule.rule_id)
        known = self._known.get(key) if cached else None
        if known is not None:
            return known
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            read: tuple[RuleState, int | None] = (RuleState(), None)
        else:
            read = (RuleState.model_validate_json(entry.value or b"{}"), entry.revision)
        self._known[key] = read
        return read

    def forget(self) -> None:
        """Drop what was kept: read every state from KV again (a partition was taken over)."""
        self._known.clear()

    async def save(self, rule: AlertRule, state: RuleState, revision: int | None) -> None:
        key = rule_key(rule.stream_id, rule.rule_id)
        body = state.model_dump_json().encode()
        self._known.pop(key, None)  # unknown until the write is confirmed
        try:
            if revision is None:
                written = await self.kv.create(key, body)
            else:
                written = await self.kv.update(key, body, last=revision)
        except KeyWrongLastSequenceError as exc:
            raise TransientError(f"state of rule {key} changed meanwhile") from exc
        self._known[key] = (state, int(written))


_UPSERT = """
INSERT INTO live_alerts (alert_id, stream_id, severity, rule, rule_kind, sensor_id, message,
    state, occurrences, raised_at, acknowledged_at, cleared_at, value, acknowledged_by, comment,
    updated_at)
VALUES (%(alert_id)s, %(stream_id)s, %(severity)s, %(rule)s, %(kind)s, %(sensor_id)s, %(message)s,
    %(state)s, %(occurrences)s, %(raised_at)s, %(ack_at)s, %(cleared_at)s, %(value)s, %(by)s,
    %(comment)s, now())
ON CONFLICT (alert_id) DO UPDATE SET
    severity = EXCLUDED.severity, message = EXCLUDED.message, state = EXCLUDED.state,
    occurrences = greatest(live_alerts.occurrences, EXCLUDED.occurrences),
    acknowledged_at = coalesce(EXCLUDED.acknowledged_at, live_alerts.acknowledged_at),
    cleared_at = CASE WHEN EXCLUDED.state = 'raised' THEN NULL
                      ELSE coalesce(EXCLUDED.cleared_at, live_alerts.cleared_at) END,
    value = CASE WHEN EXCLUDED.state = 'raised' THEN EXCLUDED.value ELSE live_alerts.value END,
    acknowledged_by = coalesce(EXCLUDED.acknowledged_by, live_alerts.acknowledged_by),
    comment = CASE WHEN EXCLUDED.comment <> '' THEN EXCLUDED.comment ELSE live_alerts.comment END,
    updated_at = now()
"""
_HISTORY = """
INSERT INTO live_alert_history (alert_id, state, at, occurrences, severity, message, value,
    by_user, comment)
VALUES (%(alert_id)s, %(state)s, %(at)s, %(occurrences)s, %(severity)s, %(message)s, %(value)s,
    %(by)s, %(comment)s)
ON CONFLICT DO NOTHING
"""


class Alerts:
    """Alert events: on the bus and in the rows at the same time (both idempotent: the event
    by its message id, the rows by upsert), and both done before the caller goes on."""

    def __init__(self, js: JetStreamContext, pool: AsyncConnectionPool) -> None:
        self.js = js
        self.pool = pool

    async def record(self, event: AlertChanged) -> None:
        at_ns = ns_of(event.at)
        dedup = f"{event.alert_id}:{event.state}:{event.occurrences}:{at_ns}"
        published = self.js.publish(
            subjects.alerts(event.stream_id, event.severity),
            event.model_dump_json().encode(),
            headers={
                subjects.HEADER_CONTENT_TYPE: "application/json",
                subjects.HEADER_MSG_ID: dedup,
            },
        )
        # a failure of either raises once both have finished: the caller tries both again
        results = await asyncio.gather(published, self.store(event), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def store(self, event: AlertChanged) -> None:
        """The rows of ``event`` only (idempotent): a site's alert at central."""
        row = {
            "alert_id": event.alert_id,
            "stream_id": event.stream_id,
            "severity": event.severity,
            "rule": event.rule_id,
            "kind": event.kind,
            "sensor_id": event.sensor_id,
            "message": event.message,
            "state": event.state,
            "occurrences": event.occurrences,
            "raised_at": event.raised_at or event.at,
            "ack_at": event.at if event.state == "acknowledged" else None,
            "cleared_at": event.at if event.state == "cleared" else None,
            "value": event.value,
            "by": event.acknowledged_by,
            "comment": event.comment,
            "at": event.at,
        }
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_UPSERT, row)
            await conn.execute(_HISTORY, row)


class CycleContext:
    """Whether a stream's cycle is running (the newest of the cycles service's events) and its
    active reference (``live_references``, cached for ``ttl_s``), for the envelope rule."""

    def __init__(self, nc: Client, pool: AsyncConnectionPool, ttl_s: float = 5.0) -> None:
        self.nc = nc
        self.pool = pool
        self.ttl_s = ttl_s
        self._refs: dict[str, tuple[float, Reference | None]] = {}

    async def running_since(self, stream_id: str) -> int | None:
        event = await current_cycle(self.nc, stream_id)
        if event is None or event.state != "running":
            return None
        return event.started_ns if event.started_ns is not None else ns_of(event.at)

    async def reference(self, stream_id: str, now: float) -> Reference | None:
        cached = self._refs.get(stream_id)
        # a missing reference is looked for again soon: the first one is built while cycles run
        if cached is not None and now - cached[0] < (self.ttl_s if cached[1] else 1.0):
            return cached[1]
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT data FROM live_references WHERE stream_id = %s AND active", (stream_id,)
            )
            row = await cur.fetchone()
        reference = reference_from_bytes(row[0]) if row else None
        self._refs[stream_id] = (now, reference)
        return reference
