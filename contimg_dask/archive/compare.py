"""Comparing a reproduced product with the original, by product kind.

Values are compared, not files: casacore leaves uninitialised padding bytes in some
Measurement Set files, zarr and FITS carry creation times, pyuvdata writes a history. The
verdict is ``identical`` (every value bit for bit) or, for kinds whose chain is not
deterministic, ``within`` a stated tolerance.

Tolerances: images (CASA tclean in its own process; thread scheduling can reorder sums) agree
when their largest pixel difference is at most :data:`IMAGE_TOLERANCE_OF_NOISE` times the
original's robust noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from contimg_dask.errors import InputError

#: Largest pixel difference an image may show, as a fraction of its noise (Jy/beam).
IMAGE_TOLERANCE_OF_NOISE = 0.01
UVDATA_ARRAYS = ("data_array", "flag_array", "nsample_array", "uvw_array", "time_array",
                 "freq_array", "ant_1_array", "ant_2_array")
DETERMINISTIC_KINDS = ("block_store", "solutions", "ms", "uvfits", "miriad", "uvh5")


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference (inf if the shapes differ; 0 for equal non-numbers)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind in "biufc" and b.dtype.kind in "biufc":
        if a.size == 0:
            return 0.0
        same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind in "fc" else a == b
        if np.all(same):
            return 0.0
        return float(np.nanmax(np.abs(a.astype(complex) - b.astype(complex))))
    return 0.0 if np.array_equal(a, b) else float("inf")


def _zarr_arrays(path: Path) -> dict[str, np.ndarray]:
    import zarr

    return {name: np.asarray(array[...])
            for name, array in _walk(zarr.open_group(str(path), mode="r"))}


def _walk(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = [(prefix + name, array) for name, array in group.arrays()]
    for name, child in group.groups():
        out += _walk(child, f"{prefix}{name}/")
    return out


def _ms_columns(path: Path) -> dict[str, np.ndarray]:
    from casacore.tables import table

    out = {}
    names = ["", *sorted(p.name for p in path.iterdir() if (p / "table.dat").is_file())]
    for name in names:
        with table(str(path / name), ack=False) as t:
            for column in t.colnames():
                if t.nrows() and t.iscelldefined(column, 0):
                    try:
                        out[f"{name or 'MAIN'}:{column}"] = np.asarray(t.getcol(column))
                    except RuntimeError:  # variable-shape column: row by row
                        out[f"{name or 'MAIN'}:{column}"] = np.asarray(
                            [np.asarray(t.getcell(column, r)) for r in range(t.nrows())],
                            dtype=object)
    return out


def _uvdata_arrays(path: Path) -> dict[str, np.ndarray]:
    from pyuvdata import UVData

    uv = UVData.from_file(str(path))
    return {name: getattr(uv, name) for name in UVDATA_ARRAYS}


def _fits_arrays(path: Path) -> dict[str, np.ndarray]:
    from astropy.io import fits

    with fits.open(path) as hdus:
        return {"data": np.asarray(hdus[0].data, float)}


def _arrays(kind: str, path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise InputError(f"{kind} product to compare is missing", file=path)
    if kind in ("block_store", "solutions"):
        return _zarr_arrays(path)
    if kind == "ms":
        return _ms_columns(path)
    if kind in ("uvfits", "miriad", "uvh5"):
        return _uvdata_arrays(path)
    return _fits_arrays(path)


def compare_products(kind: str, original: Path, reproduced: Path,
                     noise_jy: float | None = None) -> dict[str, Any]:
    """Compare two products of ``kind``. Returns ``identical`` (bool), ``max_abs_diff``
    per compared array (only those that differ), the ``tolerance`` applied (None: bit for bit)
    and ``agrees``."""
    a, b = _arrays(kind, original), _arrays(kind, reproduced)
    missing = sorted(set(a) ^ set(b))
    diffs = {name: _diff(a[name], b[name]) for name in sorted(set(a) & set(b))}
    differing = {name: d for name, d in diffs.items() if d != 0.0}
    identical = not missing and not differing
    tolerance = None
    if kind in DETERMINISTIC_KINDS:
        agrees = identical
    else:
        if noise_jy is None or not np.isfinite(noise_jy):
            from contimg_dask.imaging.products import robust_noise

            noise_jy = float(robust_noise(a["data"]))
        tolerance = IMAGE_TOLERANCE_OF_NOISE * noise_jy
        agrees = not missing and all(d <= tolerance for d in differing.values())
    return {"kind": kind, "identical": identical, "agrees": agrees, "tolerance": tolerance,
            "arrays_compared": len(diffs), "missing_arrays": missing,
            "max_abs_diff": differing}
