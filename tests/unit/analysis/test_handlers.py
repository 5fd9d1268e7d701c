"""The analysis handler (AnalyseCycles) with in-memory repositories (tests/fakes.py): the first
cycles make the reference, the learned model learns each healthy cycle once and is refitted only
when it learnt another, the trend comes after 8 scored cycles and warns of a drift before it is
critical. The same handler runs against real servers in tests/integration."""

from __future__ import annotations

import pytest

from edge.simulator import Fault
from services.analysis import mspc
from tests.fakes import Plant


async def test_the_first_cycles_make_the_reference_and_the_model_learns_each_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fits = []
    real_fit = mspc.fit
    monkeypatch.setattr(mspc, "fit", lambda *a: fits.append(1) or real_fit(*a))
    plant = Plant()
    await plant.run(range(14))
    assert len(plant.references.saved) == 1  # from c0-c2, which are not compared with it
    published = plant.results.published
    assert [r.cycle_id for r in published] == [f"press-c{i}" for i in range(3, 14)]
    first = published[0].model
    assert first is not None and not first.available and "learning: 3 of the 5" in first.note
    judged = [r.model for r in published if r.model is not None and r.model.available]
    assert judged and judged[0].model_version == 5
    assert any(m.feeds_score for m in judged) and not judged[0].feeds_score  # from 8 on
    ids, _, total = plant.models.held[("press", 1)]
    assert total == len(ids) == len(set(ids)) == 11  # every healthy cycle, once
    versions = {r.model.model_version for r in published if r.model is not None}
    assert len(fits) == len(versions) == 11  # fitted once per version (3 and 4: too few)
    healthy = [r.health_score for r in published if r.health_score is not None]
    assert min(healthy) >= 80 and max(healthy) < 99.95, healthy

    # a cycle delivered again: analysed again (the same row, upserted), not learnt twice
    await plant.handler.one(plant.event(13))
    assert plant.models.held[("press", 1)][2] == 11
    assert len(plant.results.stored) == 11


async def test_a_drift_gets_a_trend_alert_before_it_scores_critical() -> None:
    plant = Plant(faults=(Fault("pressure_1", "drift", 0.5, 14),))
    await plant.until_critical()
    published = plant.results.published
    # 8 scored cycles make a trend; it starts again when the model begins to feed the score
    fed = [r.model is not None and r.model.feeds_score for r in published]
    for k, r in enumerate(published):
        footing = next(j for j in range(k, -1, -1) if j == 0 or fed[j - 1] != fed[k])
        assert (r.trend is not None) == (k - footing + 1 >= 8), (k, footing, r.trend)
    alerted = [k for k, r in enumerate(published) if r.trend is not None and r.trend.alert]
    assert alerted and alerted[0] < len(published) - 1  # before the critical cycle
    warned = published[alerted[0]].trend
    assert (
        warned is not None and max(warned.sensors, key=warned.sensors.__getitem__) == "pressure_1"
    )
    # the drifting cycles were not all learnt: the model stops learning what is off
    total = plant.models.held[("press", 1)][2]
    assert total < len(published), (total, len(published))


async def test_the_alerts_handler_raises_the_trend_warning_once_from_the_analyses() -> None:
    from services.alerts.handlers import AlertEngine
    from tests.fakes import FakeAlerts, FakeRules, FakeRuleStates, delivered

    plant = Plant(faults=(Fault("pressure_1", "drift", 0.5, 14),))
    await plant.until_critical()
    alerts = FakeAlerts()
    clock = iter(range(10**9, 10**12, 10**9))
    engine = AlertEngine(FakeRules(), FakeRuleStates(), alerts, 60.0,  # type: ignore[arg-type]
                         clock=lambda: next(clock))  # fmt: skip
    for r in plant.results.published:
        await engine.on_analyses([delivered(r)])
    trend = [e for e in alerts.events if e.rule_id == "_trend"]
    assert [e.state for e in trend] == ["raised"], [(e.state, e.message) for e in trend]
    assert trend[0].severity == "warning" and "may reach 40 in" in trend[0].message
    assert not [e for e in alerts.events if e.rule_id == "_comparable"]
    raised_for = trend[0].message.split("(cycle ")[1].split(",")[0]
    critical = next(r.cycle_id for r in plant.results.published if r.risk_class == "critical")
    order = [r.cycle_id for r in plant.results.published]
    assert order.index(raised_for) < order.index(critical)


async def test_a_batch_runs_each_streams_cycles_in_order_and_every_one_before_a_failure_counts() -> (
    None
):
    import asyncio
    from types import SimpleNamespace

    plant = Plant()
    seen: list[str] = []

    async def one(event) -> None:  # type: ignore[no-untyped-def]
        seen.append(event.cycle_id)
        await asyncio.sleep(0.01 if event.stream_id == "a" else 0)  # streams interleave
        if event.cycle_id == "b-1":
            raise RuntimeError("b-1 cannot be analysed")

    plant.handler.one = one  # type: ignore[method-assign]
    base = plant.event(0)
    events = [
        base.model_copy(update={"stream_id": s, "cycle_id": f"{s}-{k}"})
        for s, k in (("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("a", 2))
    ]
    running = base.model_copy(update={"stream_id": "c", "cycle_id": "c-0", "state": "running"})
    batch = [SimpleNamespace(msg=None, item=e) for e in [*events, running]]
    with pytest.raises(RuntimeError, match="b-1"):
        await plant.handler(batch)  # type: ignore[arg-type]
    assert [c for c in seen if c.startswith("a")] == ["a-0", "a-1", "a-2"]  # all, in order
    assert [c for c in seen if c.startswith("b")] == ["b-0", "b-1"]  # in order, up to the failure
    assert seen.index("b-0") < seen.index("a-1")  # side by side, not one stream after the other
    assert "c-0" not in seen
