"""Monitor-data export: the state store's monitor points over a time range, at one rate
(raw samples, 1-minute aggregates, per-block aggregates), as CSV or Parquet, one row per
point: ``name, key, mean, min, max, count`` (``key``: the sample time or the minute's
start in Unix s, or the block id).

The time range selects raw samples by their time, minutes that overlap it, and blocks by
their last sample's time.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from contimg_dask.errors import InputError
from contimg_dask.io.system.atomic import atomic_file, register_product_kind
from contimg_dask.state.protocol import StateStore
from contimg_dask.state.records import MetricPoint, MetricRate

#: The monitor points every branch records (the shared vocabulary); ``stage_seconds.<stage>``
#: are added for every registered stage.
METRIC_NAMES = ("block_latency_s", "flag_fraction", "calibration_snr", "image_noise_jy",
                "image_dynamic_range", "disk_free_fraction", "backlog_blocks", "blocks_done")
COLUMNS = ("name", "key", "mean", "min", "max", "count")
FORMATS = ("csv", "parquet")



def _starts_with(path: Path, marker: bytes) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(len(marker)) == marker


register_product_kind("monitor_csv", lambda p: _starts_with(p, ",".join(COLUMNS).encode()))
register_product_kind("monitor_parquet", lambda p: _starts_with(p, b"PAR1"))


def default_metric_names(stages: list[str]) -> list[str]:
    """The shared monitor points and the seconds of each stage in ``stages``."""
    return [*METRIC_NAMES, *(f"stage_seconds.{stage}" for stage in stages)]


def monitor_points(state: StateStore, names: list[str], rate: MetricRate,
                   since: float | None, until: float | None) -> list[MetricPoint]:
    """The points of ``names`` at ``rate`` between ``since`` and ``until`` (Unix s)."""
    return [point for name in names
            for point in state.metric_series(name, rate, since=since, until=until)]


def write_points(points: list[MetricPoint], out: Path, fmt: str,
                 overwrite: bool = False) -> Path:
    """Write ``points`` to ``out`` as ``fmt`` (csv or parquet), atomically."""
    rows: list[dict[str, Any]] = [p.to_dict() for p in points]
    if fmt == "csv":
        with atomic_file(out, "monitor_csv", overwrite) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return out
    if fmt != "parquet":
        raise InputError(f"unknown monitor format {fmt!r} ({', '.join(FORMATS)})", file=out)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "name": pa.array([r["name"] for r in rows], pa.string()),
        "key": pa.array([str(r["key"]) for r in rows], pa.string()),
        **{c: pa.array([r[c] for r in rows], pa.float64()) for c in ("mean", "min", "max")},
        "count": pa.array([r["count"] for r in rows], pa.int64())})
    with atomic_file(out, "monitor_parquet", overwrite) as tmp:
        pq.write_table(table, tmp)
    return out
