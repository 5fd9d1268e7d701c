"""Columns built as binary arrays by numpy arrive in PostgreSQL exactly: extremes, NaN and
infinity, empty columns and any text."""

from __future__ import annotations

import math

import numpy as np
import psycopg

from services.ingest.pgarrays import Float8s, Int8s, Texts


async def test_numpy_columns_arrive_as_they_were(database_url: str) -> None:
    ints = np.array([0, -1, 1, 2**63 - 1, -(2**63), 1_750_000_000_123_456_789], dtype=np.int64)
    floats = np.array([0.0, -0.0, 1.5e-300, -3.25, np.nan, np.inf, -np.inf, 1e308])
    texts = ["p", "pressure_1", "Überdruck ✓", "", "a,b {c}", "p"]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT %b::bigint[], %b::float8[], %b::text[], %b::int[], %b::bigint[], %b::text[]",
            (Int8s(ints), Float8s(floats), Texts(texts), Int8s(np.array([7, -7])),
             Int8s(np.zeros(0, dtype=np.int64)), Texts([])),
        )  # fmt: skip
        got = await cur.fetchone()
    assert got is not None
    assert got[0] == ints.tolist()
    assert [math.isnan(x) for x in got[1]] == [False] * 4 + [True] + [False] * 3
    assert [x for x in got[1] if not math.isnan(x)] == [x for x in floats if not math.isnan(x)]
    assert math.copysign(1, got[1][1]) == -1.0  # -0.0 kept
    assert got[2] == texts
    assert got[3] == [7, -7]
    assert got[4] == [] and got[5] == []


async def test_a_value_too_large_for_the_column_is_refused(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        try:
            await conn.execute("SELECT %b::int[]", (Int8s(np.array([2**40])),))
        except psycopg.errors.NumericValueOutOfRange:
            return
    raise AssertionError("2^40 went into an int[]")
