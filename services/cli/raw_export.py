"""Raw samples of a stream's time range as a Parquet file (``vertac export``): read from
``live_frames`` with a server-side cursor, a few hundred frames at a time, each chunk written as
one row group, so memory stays bounded whatever the range."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg

from schemas.frames import unpack
from services.common.rollups import samples_of

MAX_FRAME_NS = 60 * 1_000_000_000  # a frame covers at most this much: it may start earlier
CHUNK_FRAMES = 500


@dataclass
class Exported:
    frames: int = 0
    samples: int = 0


_RANGE = (
    "FROM live_frames WHERE stream_id = %s AND t_first_ns >= %s AND t_first_ns < %s"
    " AND t_last_ns >= %s"
)


async def export_parquet(
    url: str,
    stream_id: str,
    start_ns: int,
    end_ns: int,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
) -> Exported:
    """Write the samples of ``stream_id`` in ``[start_ns, end_ns)`` to ``out`` in long form
    (time as a UTC timestamp in ns, sensor, value, quality), in time order per frame.
    ``progress(frames_done, frames_total)`` is called after each chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("time", pa.timestamp("ns", tz="UTC")),
            ("sensor", pa.dictionary(pa.int32(), pa.string())),
            ("value", pa.float64()),
            ("quality", pa.uint8()),
        ]
    )
    args = (stream_id, start_ns - MAX_FRAME_NS, end_ns, start_ns)
    done = Exported()
    tmp = out.with_name(out.name + ".part")
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(("SELECT count(*) " + _RANGE).encode(), args)
        row = await cur.fetchone()
        total = int(row[0]) if row else 0
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            async with conn.cursor(name="vertac_export") as frames:
                await frames.execute(
                    ("SELECT payload " + _RANGE + " ORDER BY t_first_ns, seq").encode(), args
                )
                while chunk := await frames.fetchmany(CHUNK_FRAMES):
                    batch = [unpack(r[0]) for r in chunk]
                    s = samples_of(batch)
                    keep = (s.t >= start_ns) & (s.t < end_ns)
                    names = [sensor for _, sensor in s.names]
                    writer.write_table(
                        pa.table(
                            {
                                "time": pa.array(s.t[keep], type=pa.timestamp("ns", tz="UTC")),
                                "sensor": pa.DictionaryArray.from_arrays(
                                    pa.array(s.key[keep].astype(np.int32)), pa.array(names)
                                ),
                                "value": pa.array(s.v[keep]),
                                "quality": pa.array(s.q[keep]),
                            },
                            schema=schema,
                        )
                    )
                    done.frames += len(chunk)
                    done.samples += int(keep.sum())
                    if progress is not None:
                        progress(done.frames, total)
    tmp.replace(out)
    return done
