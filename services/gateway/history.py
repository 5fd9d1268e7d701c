"""History of a stream over any range: raw frames for short spans, the 1 s or 1 min rollups for
longer ones, reduced to at most ``max_points`` buckets per sensor."""

from __future__ import annotations

import asyncio
import io
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

import numpy as np
from psycopg_pool import AsyncConnectionPool

from schemas.messages import HistorySamples, HistoryTrace
from services.gateway import raw_history
from services.gateway.csvtext import cell
from services.gateway.raw_history import Buckets, combine, raw_buckets

PARQUET: Final = "application/vnd.apache.parquet"
S: Final = 1_000_000_000
RAW_SPAN_S: Final = 600  # raw frames answer spans up to 10 min,
SPAN_SLACK_NS: Final = S  # give or take a second of a client's clock and rounding
MAX_FRAME_S: Final = 60  # a frame covers at most this much: it may start before the range
RAW_PARTS: Final = 6  # a raw range is fetched and reduced in this many parts,
RAW_LANES: Final = 2  # over this many connections

Resolution = Literal["raw", "1s", "1m"]


@dataclass(frozen=True, slots=True)
class Plan:
    resolution: Resolution
    bucket_ns: int


def plan(start_ns: int, end_ns: int, max_points: int) -> Plan:
    """Where a range is answered from and how wide its buckets are: raw frames when the
    buckets are finer than 1 s and the span at most 10 min, else the 1 s rollups while the
    buckets are finer than 1 min, else the 1 min rollups. Buckets are whole multiples of the
    source's own (1 s, 1 min), so that rollup buckets are never split."""
    span = max(1, end_ns - start_ns)
    width = -(-span // max_points)  # ceil
    if width < S and span <= RAW_SPAN_S * S + SPAN_SLACK_NS:
        return Plan("raw", max(1, width))
    if width < 60 * S:
        return Plan("1s", -(-width // S) * S)
    return Plan("1m", -(-width // (60 * S)) * 60 * S)


_ROLLUP = """
SELECT sensor_id,
       (extract(epoch FROM bucket)::bigint * 1000000000) / %(w)s * %(w)s AS b,
       min(min), max(max), sum(sum) / nullif(sum(n_values), 0), sum(n)::bigint,
       sum(n_bad)::bigint
FROM {table}
WHERE stream_id = %(stream)s AND bucket >= %(start)s AND bucket < %(end)s
  AND (%(sensors)s::text[] IS NULL OR sensor_id = ANY(%(sensors)s))
GROUP BY sensor_id, b
ORDER BY sensor_id, b
"""

_RAW = """
SELECT payload FROM live_frames
WHERE stream_id = %s AND t_first_ns >= %s AND t_first_ns < %s AND t_last_ns >= %s
ORDER BY t_first_ns
"""


class HistoryQueries:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def samples(
        self,
        stream_id: str,
        start: datetime,
        end: datetime,
        max_points: int,
        sensors: list[str] | None,
    ) -> HistorySamples:
        start_ns = int(start.timestamp() * 1e6) * 1000
        end_ns = int(end.timestamp() * 1e6) * 1000
        p = plan(start_ns, end_ns, max_points)
        if p.resolution == "raw":
            traces = await self._raw(stream_id, start_ns, end_ns, p.bucket_ns, sensors)
        else:
            traces = await self._rollups(stream_id, start, end, p, sensors)
        return HistorySamples(
            stream_id=stream_id,
            start=start,
            end=end,
            resolution=p.resolution,
            bucket_ms=p.bucket_ns / 1e6,
            sensors=traces,
        )

    async def _rollups(
        self, stream_id: str, start: datetime, end: datetime, p: Plan, sensors: list[str] | None
    ) -> dict[str, HistoryTrace]:
        table = "live_rollup_1s" if p.resolution == "1s" else "live_rollup_1m"
        args = {"w": p.bucket_ns, "stream": stream_id, "start": start, "end": end,
                "sensors": sensors}  # fmt: skip
        async with self.pool.connection() as conn:
            cur = await conn.execute(_ROLLUP.format(table=table).encode(), args)
            rows = await cur.fetchall()
        out: dict[str, HistoryTrace] = {}
        for sensor, b, lo, hi, mean, n, n_bad in rows:
            tr = out.setdefault(
                sensor, HistoryTrace(t_ms=[], min=[], max=[], mean=[], count=[], bad=[])
            )
            tr.t_ms.append(b / 1e6)
            tr.min.append(lo)
            tr.max.append(hi)
            tr.mean.append(mean)
            tr.count.append(int(n))
            tr.bad.append(int(n_bad))
        return out

    async def _raw(
        self, stream_id: str, start_ns: int, end_ns: int, bucket_ns: int, sensors: list[str] | None
    ) -> dict[str, HistoryTrace]:
        # the range in RAW_PARTS parts over RAW_LANES connections: each lane fetches its next
        # part while the history threads reduce the one before, so fetching, decompressing and
        # reducing overlap
        cuts = np.linspace(start_ns, end_ns, RAW_PARTS + 1).astype(np.int64).tolist()
        cuts[0] = start_ns - MAX_FRAME_S * S  # a frame that started before the range
        ranges = list(itertools.pairwise(cuts))

        async def lane(mine: list[tuple[int, int]]) -> list[Buckets]:
            done: list[asyncio.Future[Any]] = []
            async with self.pool.connection() as conn:
                for lo, hi in mine:
                    cur = conn.cursor(binary=True)  # bytea as bytes, not hex text
                    await cur.execute(_RAW, (stream_id, lo, hi, start_ns))
                    payloads = [r[0] for r in await cur.fetchall()]
                    done.append(asyncio.ensure_future(raw_history.run(
                        raw_buckets, payloads, start_ns, end_ns, bucket_ns, sensors
                    )))  # fmt: skip
            return [cast(Buckets, b) for b in await asyncio.gather(*done)]

        lanes = await asyncio.gather(*(lane(ranges[k::RAW_LANES]) for k in range(RAW_LANES)))
        parts = [b for bs in lanes for b in bs]
        b = combine(list(parts))
        t_ms = (start_ns + np.arange(b.count.shape[1]) * bucket_ns) / 1e6
        mean = np.where(b.n_values > 0, b.sum / np.maximum(b.n_values, 1), np.nan)
        out: dict[str, HistoryTrace] = {}
        for row, sensor in enumerate(b.ids):
            sel = b.count[row] > 0
            out[sensor] = HistoryTrace(
                t_ms=t_ms[sel].tolist(), min=_nones(b.min[row, sel]), max=_nones(b.max[row, sel]),
                mean=_nones(mean[row, sel]), count=b.count[row, sel].tolist(),
                bad=b.bad[row, sel].tolist(),
            )  # fmt: skip
        return out


def _nones(a: np.ndarray) -> list[float | None]:
    out = a.astype(object)
    out[np.isnan(a)] = None
    return out.tolist()  # type: ignore[no-any-return]


def history_csv(h: HistorySamples) -> str:
    """time (UTC, ms), sensor, min, max, mean, count: one row per bucket."""
    out = io.StringIO()
    out.write("time,sensor,min,max,mean,count\n")
    for sensor, tr in h.sensors.items():
        for t, lo, hi, mean, n in zip(tr.t_ms, tr.min, tr.max, tr.mean, tr.count, strict=True):
            iso = datetime.fromtimestamp(t / 1000, UTC).isoformat(timespec="milliseconds")
            out.write(f"{iso},{cell(sensor)},{_num(lo)},{_num(hi)},{_num(mean)},{n}\n")
    return out.getvalue()


def _num(x: float | None) -> str:
    return "" if x is None else repr(x)


def history_parquet(h: HistorySamples) -> bytes:
    """The same rows as :func:`history_csv`, as a Parquet file (time as a UTC timestamp)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sensors, t, lo, hi, mean, n = [], [], [], [], [], []
    for sensor, tr in h.sensors.items():
        sensors += [sensor] * len(tr.t_ms)
        t += tr.t_ms
        lo += tr.min
        hi += tr.max
        mean += tr.mean
        n += tr.count
    table = pa.table(
        {
            "time": pa.array(np.asarray(t, dtype=np.float64).astype("datetime64[ms]"),
                             type=pa.timestamp("ms", tz="UTC")),
            "sensor": pa.array(sensors, type=pa.string()),
            "min": pa.array(lo, type=pa.float64()),
            "max": pa.array(hi, type=pa.float64()),
            "mean": pa.array(mean, type=pa.float64()),
            "count": pa.array(n, type=pa.int64()),
        }
    )  # fmt: skip
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()
