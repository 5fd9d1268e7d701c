"""Batch dataset files: what VerTac reads (long, wide, one cycle or a cycle column, CSV or
Parquet), the samples CSV it exports reads back exactly, and bad files are named."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.frames import Frame, Series
from services.cycles.dataset_files import (
    DatasetError,
    cycle_id_of,
    parse_cycles,
    read_file,
)
from services.gateway.dataset_export import ExportedCycle, export_parquet, export_zip
from services.gateway.logic import recording_csv

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def recorded() -> Frame:
    t = T0 + np.arange(50, dtype=np.int64) * 10_000_000
    q = np.full(50, 192, np.uint8)
    q[7] = 64
    return Frame("press-01", 0, (
        Series("pressure_1", np.linspace(0, 150, 50), int(t[0]), 0, t, q),
        Series("temperature_1", np.array([40.125, 40.5]), T0, 0, np.array([T0, T0 + 10**9])),
    ), 0)  # fmt: skip


def test_the_samples_csv_vertac_exports_reads_back_exactly() -> None:
    frame = recorded()
    (cycle,) = parse_cycles("c-17.csv", read_file("c-17.csv", recording_csv(frame).encode()))
    assert cycle.key == "c-17"
    for s in frame.series:
        t, v, q = cycle.series[s.sensor_id]
        assert t.tolist() == s.timestamps().tolist()
        assert v.tolist() == s.values.astype(np.float64).tolist()
        assert q.tolist() == s.qualities().tolist()


def test_a_wide_file_with_a_cycle_column_and_labels_gives_several_cycles() -> None:
    text = (
        "cycle,timestamp,p,temp,label\n"
        "a,2026-01-01T00:00:00Z,1.0,20,good\n"
        "a,2026-01-01T00:00:01.5Z,2.0,,\n"
        "b,1767225610,3.0,21,\n"
        "b,1767225611,4.0,22,bad\n"
    )
    a, b = parse_cycles("long.csv", read_file("long.csv", text.encode()))
    assert (a.key, a.label, b.key, b.label) == ("a", "good", "b", "bad")
    assert a.series["p"][0].tolist() == [T0, T0 + 1_500_000_000]
    assert a.series["temp"][1].tolist() == [20.0]  # the empty cell is no sample
    assert b.series["p"][0][0] == T0 + 10 * 10**9


def test_parquet_is_read_by_its_content_with_timestamps_or_seconds() -> None:
    table = pa.table({
        "timestamp": pa.array(np.array([T0, T0 + 10**9], dtype="datetime64[ns]")),
        "p": [1.0, 2.0],
    })  # fmt: skip
    out = io.BytesIO()
    pq.write_table(table, out)
    (cycle,) = parse_cycles("x.bin", read_file("x.bin", out.getvalue()))
    assert cycle.series["p"][0].tolist() == [T0, T0 + 10**9]


def test_an_exported_parquet_dataset_imports_again_with_its_cycles() -> None:
    frame = recorded()
    analysis = {"health_score": 42.0, "risk_class": "high", "reference_version": 2}
    data = export_parquet("ds", [
        ExportedCycle("ds.c1", "press-01", "good", frame, None),
        ExportedCycle("ds.c2", "press-01", "bad", frame, analysis),
    ])  # fmt: skip
    meta = pq.read_metadata(io.BytesIO(data)).metadata
    assert b"vertac.analysis" in meta
    table = read_file("ds.parquet", data)
    assert set(table.column("health_score").to_pylist()) == {None, 42.0}
    c1, c2 = parse_cycles("ds.parquet", table)
    assert (c1.key, c1.label, c2.key, c2.label) == ("ds.c1", "good", "ds.c2", "bad")
    assert c2.series["pressure_1"][2].tolist() == frame.series[0].qualities().tolist()


def test_an_exported_zip_holds_a_samples_csv_per_cycle_and_the_index() -> None:
    frame = recorded()
    data = export_zip("ds", [ExportedCycle("ds.c1", "press-01", "ok, fine", frame, None)],
                      recording_csv, lambda a: "")  # fmt: skip
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert set(z.namelist()) == {"ds.c1.csv", "dataset.csv", "README.txt"}
        assert '"ok, fine"' in z.read("dataset.csv").decode()
        (cycle,) = parse_cycles("ds.c1.csv", read_file("ds.c1.csv", z.read("ds.c1.csv")))
    assert cycle.series["temperature_1"][1].tolist() == [40.125, 40.5]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("a,b\n1,2\n", "f.csv.columns", "no time column"),
        ("timestamp,sensor_id\n1,p\n", "f.csv.columns", "needs a 'value' column"),
        ("timestamp,p\nsoon,1\n", "f.csv.timestamp", "not a time"),
        ("timestamp,sensor_id,value,quality\n1,p,1,300\n", "f.csv.quality", "0-255"),
        ("timestamp\n1\n", "f.csv.columns", "no sensor columns"),
        ("", "f.csv", "empty"),
    ],
)
def test_a_bad_file_is_refused_naming_where(text: str, field: str, words: str) -> None:
    with pytest.raises(DatasetError) as err:
        parse_cycles("f.csv", read_file("f.csv", text.encode()))
    assert err.value.field == field
    assert words in err.value.message


def test_cycle_ids_are_stable_and_safe() -> None:
    assert cycle_id_of("ds", "run 7/a") == "ds.run-7-a"
    assert cycle_id_of("ds", "run 7/a") == cycle_id_of("ds", "run 7/a")
