"""In-memory stand-ins for the analysis service's repositories and bus (the real ones are tested
against real servers in tests/integration): each keeps what it was given, so a handler's
behaviour is tested in milliseconds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.simulator import Fault, Simulation, build_machine
from schemas.frames import Frame, pack, unpack
from schemas.messages import (
    AlertChanged,
    AlertRule,
    AnalysisCompleted,
    CycleStateChanged,
    StreamRegistration,
)
from schemas.timeutil import NS
from services.alerts.logic import RuleState
from services.analysis.adapters import Learnt
from services.analysis.app import params_of, trend_params_of
from services.analysis.config import Settings
from services.analysis.handlers import AnalyseCycles
from services.analysis.score import result_deviations
from services.analysis.trend import Point
from services.common.references import Reference


class FakeRecordings:
    def __init__(self) -> None:
        self.frames: dict[str, Frame] = {}

    async def get(self, name: str) -> Frame:
        return self.frames[name]


class FakeRegistry:
    def __init__(self, registration: StreamRegistration) -> None:
        self.registration = registration

    async def sensors(self, stream_id: str) -> tuple[dict[str, str], dict[str, str]]:
        s = self.registration.sensors
        return {x.id: x.type for x in s}, {x.id: x.unit for x in s}

    async def names(self, stream_id: str) -> dict[str, str] | None:
        return {x.id: x.name for x in self.registration.sensors}


class FakeReferences:
    def __init__(self) -> None:
        self.saved: list[Reference] = []
        self.completed: list[tuple[str, str, int, int]] = []  # as the cycles service stores them
        self.retired: list[int] = []

    async def active(self, stream_id: str) -> Reference | None:
        live = [r for r in self.saved if r.version not in self.retired]
        return live[-1] if live else None

    async def save(self, reference: Reference, cycle_ids: list[str], *, activate: bool,
                   description: str) -> int:  # fmt: skip
        version = len(self.saved) + 1
        self.saved.append(replace(reference, version=version))
        return version

    async def retire(self, stream_id: str, version: int, since: datetime, reason: str) -> bool:
        self.retired.append(version)
        return True

    async def completed_cycles(self, stream_id: str, limit: int) -> list[tuple[str, str, int, int]]:
        return self.completed[:limit]


class FakeResults:
    def __init__(self) -> None:
        self.stored: dict[tuple[str, int], AnalysisCompleted] = {}  # as live_deviations: upsert
        self.published: list[AnalysisCompleted] = []

    async def store(self, result: AnalysisCompleted, *, publish: bool = True) -> None:
        self.stored[(result.cycle_id, result.reference_version or 0)] = result
        if publish:
            self.published.append(result)


class FakeModels:
    def __init__(self) -> None:
        self.held: dict[tuple[str, int], tuple[list[str], list[npt.NDArray[np.float64]], int]] = {}

    async def total(self, stream_id: str, reference_version: int) -> int:
        return self.held.get((stream_id, reference_version), ([], [], 0))[2]

    async def learnt(self, stream_id: str, reference_version: int) -> Learnt:
        ids, rows, total = self.held.get((stream_id, reference_version), ([], [], 0))
        return Learnt(list(ids), np.array(rows) if rows else None, total)

    async def learn(self, stream_id: str, reference_version: int, cycle_id: str,
                    row: npt.NDArray[np.float64], keep: int) -> bool:  # fmt: skip
        ids, rows, total = self.held.get((stream_id, reference_version), ([], [], 0))
        if cycle_id in ids:
            return False
        ids, rows = [*ids, cycle_id][-keep:], [*rows, row][-keep:]
        self.held[(stream_id, reference_version)] = (ids, rows, total + 1)
        return True


class FakeHistory:
    """The trend's history, read from what :class:`FakeResults` stored (as the real one reads
    ``live_deviations`` joined with ``live_cycles``)."""

    def __init__(self, results: FakeResults, ended: dict[str, datetime]) -> None:
        self.results = results
        self.ended = ended

    async def before(self, stream_id: str, reference_version: int, ended_at: datetime,
                     cycle_id: str, n: int) -> list[Point]:  # fmt: skip
        rows = sorted(
            ((self.ended[r.cycle_id], r)
             for (cid, version), r in self.results.stored.items()
             if version == reference_version and r.health_score is not None
             and cid != cycle_id and self.ended[cid] < ended_at),
            key=lambda pair: pair[0],
        )[-n:]  # fmt: skip
        return [
            Point(
                at.timestamp(),
                r.health_score or 0.0,
                result_deviations(r),
                r.model is not None and r.model.feeds_score,
            )
            for at, r in rows
        ]


class FakeRules:
    def __init__(self, rules: list[AlertRule] | None = None) -> None:
        self.rules = rules or []

    async def all(self) -> list[AlertRule]:
        return list(self.rules)

    async def put(self, rule: AlertRule) -> None:
        self.rules = [
            *(r for r in self.rules if (r.stream_id, r.rule_id) != (rule.stream_id, rule.rule_id)),
            rule,
        ]

    async def delete(self, stream_id: str, rule_id: str) -> bool:
        kept = [r for r in self.rules if (r.stream_id, r.rule_id) != (stream_id, rule_id)]
        removed, self.rules = len(kept) < len(self.rules), kept
        return removed


class FakeRuleStates:
    """Rule states with a revision each, as the KV bucket keeps them."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], tuple[RuleState, int]] = {}

    async def load(self, rule: AlertRule, cached: bool = False) -> tuple[RuleState, int | None]:
        found = self.held.get((rule.stream_id, rule.rule_id))
        return found if found is not None else (RuleState(), None)

    async def save(self, rule: AlertRule, state: RuleState, revision: int | None) -> None:
        self.held[(rule.stream_id, rule.rule_id)] = (state, (revision or 0) + 1)


class FakeAlerts:
    def __init__(self) -> None:
        self.events: list[AlertChanged] = []

    async def record(self, event: AlertChanged) -> None:
        self.events.append(event)


def delivered(item: Any) -> Any:
    """A delivery as the consumer loop hands it to a handler (no bus message behind it)."""
    return SimpleNamespace(msg=None, item=item)


SETTINGS = Settings()
CYCLE_S = 4
START = 1_750_000_000 * NS


class Plant:
    """One simulated press and the analysis handler at default settings, on fakes."""

    def __init__(self, faults: tuple[Fault, ...] = (), stream_id: str = "press") -> None:
        self.stream_id = stream_id
        self.machine = build_machine(stream_id=stream_id, sensors=6, rate_hz=50, cycle_s=CYCLE_S,
                                     faults=faults)  # fmt: skip
        self.sim = Simulation(self.machine, START)
        self.recordings, self.references = FakeRecordings(), FakeReferences()
        self.results, self.models, self.ended = FakeResults(), FakeModels(), {}
        self.handler = AnalyseCycles(
            self.recordings, self.references, FakeRegistry(self.machine.registration()),  # type: ignore[arg-type]
            self.results, params_of(SETTINGS), SETTINGS.n_points, SETTINGS.auto_reference_cycles,  # type: ignore[arg-type]
            models=self.models, history=FakeHistory(self.results, self.ended),  # type: ignore[arg-type]
            trend_params=trend_params_of(SETTINGS),
        )  # fmt: skip

    def event(self, i: int) -> CycleStateChanged:
        a, b = START + i * CYCLE_S * NS, START + (i + 1) * CYCLE_S * NS
        name = f"rec-{i}"
        if name not in self.recordings.frames:  # the cycles service records it, then says so
            self.recordings.frames[name] = unpack(pack(self.sim.frame(i, a, b)))
            self.references.completed.append((f"{self.stream_id}-c{i}", name, a, b - 1))
        ended = datetime.fromtimestamp((b - 1) / NS, UTC)
        self.ended[f"{self.stream_id}-c{i}"] = ended
        return CycleStateChanged(
            stream_id=self.stream_id, cycle_id=f"{self.stream_id}-c{i}", state="completed", at=ended, cycle_no=i,
            started_at=datetime.fromtimestamp(a / NS, UTC), ended_at=ended, recording=name,
        )  # fmt: skip

    async def run(self, cycles: range) -> None:
        for i in cycles:
            await self.handler.one(self.event(i))

    async def until_critical(self, most: int = 80) -> int:
        """Cycles until one scores critical; how many ran."""
        i = 0
        while not any(r.risk_class == "critical" for r in self.results.published):
            await self.run(range(i, i + 1))
            i += 1
            assert i < most, [r.health_score for r in self.results.published]
        return i


class FakeKV:
    """A JetStream KV bucket in memory: revisions, create and compare-and-set update, with the
    errors nats-py raises."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[bytes, int]] = {}
        self.revision = 0

    async def get(self, key: str) -> Any:
        from nats.js.errors import KeyNotFoundError

        if key not in self.entries:
            raise KeyNotFoundError
        value, revision = self.entries[key]
        return SimpleNamespace(key=key, value=value, revision=revision)

    async def create(self, key: str, value: bytes) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        if key in self.entries:
            raise KeyWrongLastSequenceError
        return await self.put(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        if key not in self.entries or self.entries[key][1] != last:
            raise KeyWrongLastSequenceError
        return await self.put(key, value)

    async def put(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.entries[key] = (value, self.revision)
        return self.revision

    async def keys(self) -> list[str]:
        from nats.js.errors import NoKeysError

        if not self.entries:
            raise NoKeysError
        return list(self.entries)


class FakeMsg:
    """A JetStream message as a handler sees it: its stream sequence, ack and nak."""

    def __init__(self, js_seq: int) -> None:
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=js_seq), num_delivered=1)
        self.acks = 0
        self.naks = 0

    async def ack(self) -> None:
        self.acks += 1

    async def nak(self) -> None:
        self.naks += 1


class FakeCycleOutputs:
    """Where the cycles engine writes: recordings (object store), events (bus), rows (table)."""

    def __init__(self) -> None:
        self.recorded: dict[str, Frame] = {}
        self.events: list[CycleStateChanged] = []
        self.rows: dict[str, CycleStateChanged] = {}

    async def put(self, cycle_id: str, frame: Frame) -> str:
        self.recorded[cycle_id] = unpack(pack(frame))
        return cycle_id

    async def publish(self, event: CycleStateChanged) -> None:
        self.events.append(event)

    async def upsert(self, event: CycleStateChanged, start_reason: str = "") -> None:
        held = self.rows.get(event.cycle_id)
        if held is None or held.state == "running":  # as live_cycles' upsert
            self.rows[event.cycle_id] = event
