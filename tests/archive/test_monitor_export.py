"""Monitor data out of the state store (both backends): every rate, CSV and Parquet, values
compared with averages computed here from the samples recorded."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from contimg_dask.archive.monitor import monitor_points, write_points
from contimg_dask.state import MetricSample, StateStore

T0 = 1_780_000_020.0  # a minute boundary (Unix s)


def _record(store: StateStore) -> list[MetricSample]:
    rng = np.random.default_rng(2)
    samples = [MetricSample("flag_fraction", float(rng.uniform(0, 0.2)), T0 + 7.0 * i,
                            block_id=f"2026-05-28T20:0{i // 20}:00") for i in range(50)]
    samples += [MetricSample("stage_seconds.flag", float(rng.uniform(1, 3)), T0 + 11.0 * i)
                for i in range(20)]
    store.record_metrics(samples)
    return samples


def _rows(path: Path, fmt: str) -> list[dict]:
    if fmt == "csv":
        with path.open() as f:
            return [{**r, "mean": float(r["mean"]), "count": int(r["count"])}
                    for r in csv.DictReader(f)]
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_every_rate_exports_the_recorded_values(store: StateStore, tmp_path: Path,
                                                fmt: str) -> None:
    samples = _record(store)
    flags = [s for s in samples if s.name == "flag_fraction"]
    since, until = T0 + 60.0, T0 + 250.0
    names = ["flag_fraction", "stage_seconds.flag", "image_noise_jy"]

    raw = _rows(write_points(monitor_points(store, names, "raw", since, until),
                             tmp_path / f"raw.{fmt}", fmt), fmt)
    expected = [s for s in samples if since <= s.at <= until]
    assert len(raw) == len(expected)
    assert sorted(r["mean"] for r in raw) == pytest.approx(sorted(s.value for s in expected))

    minute = _rows(write_points(monitor_points(store, ["flag_fraction"], "minute", since,
                                               until), tmp_path / f"minute.{fmt}", fmt), fmt)
    starts = sorted({float(r["key"]) for r in minute})
    assert starts == [T0 + 60.0 * k for k in (1, 2, 3, 4)]
    for row in minute:
        inside = [s.value for s in flags if float(row["key"]) <= s.at < float(row["key"]) + 60]
        assert row["count"] == len(inside)
        assert row["mean"] == pytest.approx(np.mean(inside), rel=1e-12)

    block = _rows(write_points(monitor_points(store, ["flag_fraction"], "block", None, None),
                               tmp_path / f"block.{fmt}", fmt), fmt)
    assert {r["key"] for r in block} == {s.block_id for s in flags}
    for row in block:
        values = [s.value for s in flags if s.block_id == row["key"]]
        assert row["count"] == len(values)
        assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)


def test_an_existing_other_file_is_not_replaced(store: StateStore, tmp_path: Path) -> None:
    from contimg_dask.errors import OutputError

    precious = tmp_path / "notes.csv"
    precious.write_text("not a monitor export\n")
    with pytest.raises(OutputError, match=r"notes\.csv"):
        write_points([], precious, "csv")
    assert precious.read_text() == "not a monitor export\n"


def test_command_writes_the_requested_rate(store: StateStore, cli_settings: list[str],
                                           tmp_path: Path, capsys: pytest.CaptureFixture
                                           ) -> None:
    from contimg_dask.cli.main import main

    samples = [s for s in _record(store) if s.name == "flag_fraction"]
    out = tmp_path / "flags.parquet"
    assert main([*cli_settings, "archive", "monitor",
                 "--from", "2026-05-28T20:27:00", "--to", "2026-05-28T20:31:00", "--rate",
                 "raw", "--format", "parquet", "--out", str(out), "--metric",
                 "flag_fraction"]) == 0
    rows = _rows(out, "parquet")
    # 2026-05-28T20:27:00Z is T0: the window is T0 ... T0 + 240 s.
    inside = [s.value for s in samples if T0 <= s.at <= T0 + 240]
    assert 0 < len(inside) < len(samples)
    assert sorted(r["mean"] for r in rows) == pytest.approx(sorted(inside))
    assert "points" in capsys.readouterr().out
