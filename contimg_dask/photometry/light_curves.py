"""Read-only light curves for the dashboard (``contimg dashboard`` injects
:func:`light_curve_reader` into the monitoring layer, which cannot import photometry).

A light curve is the source's rows in the measurement tables of the newest catalogue
version, in time order: ``mjd`` (MJD, UTC), ``flux_jy``/``err_jy`` the normalised flux
density and its 1σ error (Jy; NaN where the epoch is not normalised or the source not
measured, as the variability metrics use them) and ``upper_limit_jy`` (Jy, NaN unless the
source was below the detection limit).

The tables are read with ``pyarrow.parquet`` alone (the columns a light curve needs, one
file at a time): neither pandas nor the rest of the photometry stack (numba, scipy) is
imported, so the dashboard process stays ~150 MiB smaller than with photometry/tables.py;
pyarrow itself is imported on the first read, so a dashboard with no
candidate does not carry it either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.errors import UnreadableFileError
from contimg_dask.photometry.layout import (
    FLAG_EPOCH_UNNORMALISED,
    FLAG_NOT_MEASURED,
    PhotometryLayout,
    photometry_root,
)

LightCurves = dict[str, dict[str, list[float]]]
#: The measurement-table columns a light curve needs.
COLUMNS = ("name", "mjd", "flags", "norm_flux_jy", "norm_err_jy", "upper_limit",
           "upper_limit_jy")


def _rows_of(path: Path, names: set[str]) -> list[dict[str, Any]]:
    """The :data:`COLUMNS` of the rows of ``names`` in the measurement table ``path``.

    Rows are picked in Python (the ``name`` column as a list, then a one-row slice per row
    kept): pyarrow imports pandas for any conversion to NumPy or from Python values
    (``to_numpy``, ``pa.array``, the compute filters), and this reader must not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as table_file:
            table = table_file.read(columns=list(COLUMNS))
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableFileError(f"photometry table {path} is unreadable: {exc}",
                                  file=path) from exc
    return [row for i, name in enumerate(table.column("name").to_pylist()) if name in names
            for row in table.slice(i, 1).to_pylist()]


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _normalised(row: dict[str, Any], column: str) -> float:
    """``row[column]``, NaN where the epoch is not normalised or the source not measured."""
    if int(row["flags"]) & (FLAG_EPOCH_UNNORMALISED | FLAG_NOT_MEASURED):
        return math.nan
    return _number(row[column])


def read_light_curves(tables: PhotometryLayout, names: list[str]) -> LightCurves:
    """The light curves of ``names`` that have measurements (the others are left out)."""
    versions = tables.versions()
    if not versions or not names:
        return {}
    wanted = set(names)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for path in tables.measurement_files(versions[0]):
        for row in _rows_of(path, wanted):
            by_name.setdefault(row["name"], []).append(row)
    curves: LightCurves = {}
    for name, rows in by_name.items():
        rows.sort(key=lambda r: r["mjd"])
        curves[name] = {
            "mjd": [float(r["mjd"]) for r in rows],
            "flux_jy": [_normalised(r, "norm_flux_jy") for r in rows],
            "err_jy": [_normalised(r, "norm_err_jy") for r in rows],
            "upper_limit_jy": [_number(r["upper_limit_jy"]) if r["upper_limit"] else math.nan
                               for r in rows]}
    return curves


def light_curve_reader(config: PipelineConfig) -> Callable[[list[str]], LightCurves]:
    """:func:`read_light_curves` over the photometry tables under
    ``<paths.products>/photometry`` (nothing read, nor imported, for no names)."""
    layout = PhotometryLayout(photometry_root(config))

    def read(names: list[str]) -> LightCurves:
        return read_light_curves(layout, names) if names else {}

    return read
