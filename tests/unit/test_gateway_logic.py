"""Gateway logic: REST batches to frames and min/max decimation."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from schemas.frames import Frame, Series
from schemas.messages import BatchRequest, SensorSpec
from services.gateway.logic import Decimator, UnknownSensor, batch_to_frame, min_max_buckets


def test_a_batch_becomes_one_series_per_sensor_sorted_by_time() -> None:
    batch = BatchRequest(
        stream_id="s",
        samples=[
            {"timestamp": 2.0, "values": {"a": 2.0, "b": 20.0}},
            {"timestamp": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), "values": {"a": 1.0},
             "quality": {"a": 0}},
        ],
    )  # fmt: skip
    frame = batch_to_frame(batch, 9, 0, None)
    a = next(s for s in frame.series if s.sensor_id == "a")
    assert a.values.tolist() == [1.0, 2.0]
    assert a.timestamps().tolist() == [1_000_000_000, 2_000_000_000]
    assert a.qualities().tolist() == [0, 192]
    assert frame.seq == 9
    assert frame.n_samples == 3


def test_an_unregistered_sensor_is_named() -> None:
    batch = BatchRequest(stream_id="s", samples=[{"timestamp": 1, "values": {"zz": 1}}])
    with pytest.raises(UnknownSensor) as err:
        batch_to_frame(batch, 0, 0, [SensorSpec(id="a")])
    assert err.value.field == "samples.0.values.zz"


def test_naive_timestamps_are_refused() -> None:
    batch = BatchRequest(
        stream_id="s", samples=[{"timestamp": "2026-01-01T00:00:00", "values": {"a": 1}}]
    )
    with pytest.raises(ValueError, match="time zone"):
        batch_to_frame(batch, 0, 0, None)


def test_min_max_buckets_keep_every_extreme() -> None:
    v = np.sin(np.linspace(0, 20, 10_000))
    v[1234] = 50.0
    v[8765] = -50.0
    t = np.arange(10_000, dtype=np.int64) * 1_000_000
    t_ms, lo, hi, mean = min_max_buckets(t, v, 100)
    assert len(t_ms) == 100
    assert hi.max() == 50.0
    assert lo.min() == -50.0
    assert np.all(lo <= hi)
    assert np.all((lo <= mean) & (mean <= hi))
    assert mean[0] == pytest.approx(v[:100].mean())


def test_bucket_means_ignore_nan_samples() -> None:
    v = np.array([1.0, np.nan, 3.0, np.nan, np.nan, np.nan])
    t = np.arange(6, dtype=np.int64)
    _, lo, hi, mean = min_max_buckets(t, v, 2)
    assert mean[0] == 2.0
    assert np.isnan(mean[1])
    assert lo[0] == 1.0 and hi[0] == 3.0


def test_decimator_merges_frames_and_passes_short_series_unchanged() -> None:
    d = Decimator("s", buckets=10)
    d.add(Frame("s", 1, (Series("fast", np.arange(500.0), 0, 1_000_000),
                         Series("slow", np.array([7.0]), 0, 1)),))  # fmt: skip
    d.add(
        Frame(
            "s", 2, (Series("fast", np.arange(500.0, 1000.0), 500_000_000, 1_000_000),),
            sent_ns=1_700_000_000_123_000_000,
        )
    )  # fmt: skip
    msg = d.flush()
    assert msg is not None
    assert msg.seq == 2
    assert msg.sent_ms == [1_700_000_000_123.0]  # the first frame carried no sent time
    assert len(msg.sensors["fast"].t_ms) == 10
    assert msg.sensors["fast"].count == 1000
    assert msg.sensors["fast"].max[-1] == 999.0
    assert msg.sensors["slow"].min == [7.0]
    assert d.flush() is None


def test_cycle_overlay_thins_and_stretches_the_reference() -> None:
    from datetime import UTC, datetime

    from schemas.messages import ReferenceInfo, ReferenceSensor
    from services.gateway.logic import cycle_overlay, thin

    t = np.arange(1000, dtype=np.float64)
    tt, vv = thin(t, t * 2, 100)
    assert len(tt) == 100
    assert tt[0] == pytest.approx(4.5) and vv[0] == pytest.approx(9.0)
    frame = Frame(
        "s", 0,
        (Series("p", np.linspace(0, 1, 2000), 10**18, 5_000_000),
         Series("q", np.ones(3), 10**18, 2_000_000_000)),
    )  # fmt: skip
    ref = ReferenceInfo(
        stream_id="s", reference_version=3, active=True, source_cycles=["c"], n_points=50,
        duration_s=9.0, description="", created_at=datetime.now(UTC), sensors=["p"],
        curves=[ReferenceSensor(sensor_id="p", sensor_type="pressure", unit="bar",
                                mean=[0.5] * 50, lower=[0.4] * 50, upper=[0.6] * 50)],
    )  # fmt: skip
    out = cycle_overlay("c1", frame, ref, ["q", "p"], {"q": "mm"}, 300)
    assert [s.sensor_id for s in out.sensors] == ["q", "p"]
    p = out.sensors[1]
    assert len(p.t_s) == 300
    assert p.unit == "bar"
    # the reference is stretched over the cycle and put on the cycle's own (thinned) points
    assert p.ref_t_s == p.t_s
    assert len(p.ref_mean) == 300 and p.ref_mean[0] == pytest.approx(0.5)
    assert p.ref_lower[-1] == pytest.approx(0.4) and p.ref_upper[-1] == pytest.approx(0.6)
    assert out.sensors[0].ref_mean == [] and out.sensors[0].unit == "mm"
    assert out.reference_version == 3


def test_alerts_are_grouped_by_severity_rule_and_sensor() -> None:
    from datetime import UTC, datetime, timedelta

    from services.gateway.logic import group_alerts

    t = datetime(2026, 1, 1, tzinfo=UTC)

    def row(rule: str, sev: str, sensor: str | None, n: int, minutes: int, msg: str) -> dict:
        return {"rule": rule, "rule_kind": "limit", "severity": sev, "sensor_id": sensor,
                "occurrences": n, "raised_at": t + timedelta(minutes=minutes), "message": msg}  # fmt: skip

    groups = group_alerts([
        row("p-high", "warning", "p", 1, 9, "newest"),
        row("flat", "warning", None, 5, 8, "flat"),
        row("p-high", "warning", "p", 3, 2, "older"),
        row("p-high", "critical", "p", 1, 1, "hihi"),
    ])  # fmt: skip
    assert [(g.severity, g.rule, g.alerts, g.occurrences) for g in groups] == [
        ("critical", "p-high", 1, 1),
        ("warning", "flat", 1, 5),
        ("warning", "p-high", 2, 4),
    ]
    assert groups[2].last_message == "newest"
    assert groups[2].first_raised_at == t + timedelta(minutes=2)
    assert group_alerts([]) == []


def _parsed(text: str | None) -> dict:  # type: ignore[type-arg]
    import json

    assert text is not None
    out = json.loads(text)
    out.pop("timestamp")
    return out  # type: ignore[no-any-return]


@pytest.mark.parametrize("shuffled", [False, True])
def test_decimator_reduces_regular_messages_as_it_reduces_frames(shuffled: bool) -> None:
    """A message taken straight from its body (all sensors at once, a u1 input beside f4
    values) gives the update that the same frames decoded sensor by sensor give, NaN
    included."""
    from edge.publisher import frame_message
    from schemas.frames import encode_binary
    from services.gateway.logic import envelope

    rng = np.random.default_rng(3)
    frames = []
    for k in range(3):
        values = rng.normal(size=(4, 25)).astype(np.float32)
        values[1, 3] = np.nan
        series = tuple(Series(f"s{i}", values[i], 1_000_000_000 * k, 4_000_000) for i in range(4))
        series += (Series("on", (values[0] > 0).astype(np.uint8), 1_000_000_000 * k, 4_000_000),)
        frames.append(Frame("plant-1", k, series, sent_ns=1_700_000_000_000_000_000 + k))
    fast, slow = Decimator("plant-1", buckets=7), Decimator("plant-1", buckets=7)
    for f in frames:
        _, payload, headers = frame_message(f)
        if shuffled:
            payload = encode_binary(f, shuffled=True)
        fast.add_message(payload, headers)
        slow.add(f)
    slow_msg = slow.flush()
    assert slow_msg is not None
    assert _parsed(fast.flush_text()) == _parsed(envelope(slow_msg))
    assert fast.flush_text() is None


def test_decimator_mixes_regular_messages_with_other_frames() -> None:
    from edge.publisher import frame_message

    d = Decimator("s", buckets=10)
    regular = Frame("s", 1, (Series("a", np.arange(10.0), 0, 1_000_000),
                             Series("b", np.arange(10.0), 0, 1_000_000)))  # fmt: skip
    _, payload, headers = frame_message(regular)
    d.add_message(payload, headers)
    d.add(Frame("s", 2, (Series("a", np.array([50.0]), 20_000_000, 1),)))
    msg = _parsed(d.flush_text())
    assert msg["data"]["seq"] == 2
    assert msg["data"]["sensors"]["a"]["count"] == 11
    assert msg["data"]["sensors"]["a"]["last"] == 50.0
    assert msg["data"]["sensors"]["b"]["count"] == 10
