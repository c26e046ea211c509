"""Read-only light curves for the dashboard (``contimg dashboard`` injects
:func:`light_curve_reader` into the monitoring layer, which cannot import photometry).

A light curve is the source's rows in the measurement tables of the newest catalogue
version, in time order: ``mjd`` (MJD, UTC), ``flux_jy``/``err_jy`` the normalised flux
density and its 1σ error (Jy; NaN where the epoch is not normalised or the source not
measured, as the variability metrics use them) and ``upper_limit_jy`` (Jy, NaN unless the
source was below the detection limit).

The photometry modules (pandas, pyarrow, numba: ~160 MB resident) are imported on the
first read, so a dashboard with no candidate does not carry them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contimg_dask.config.schema import PipelineConfig

if TYPE_CHECKING:
    from contimg_dask.photometry.tables import PhotometryTables

LightCurves = dict[str, dict[str, list[float]]]


def read_light_curves(tables: PhotometryTables, names: list[str]) -> LightCurves:
    """The light curves of ``names`` that have measurements (the others are left out)."""
    from contimg_dask.photometry.record import usable_flux

    versions = tables.versions()
    if not versions or not names:
        return {}
    rows = tables.measurements(versions[0], list(names))
    curves: LightCurves = {}
    if rows.empty:
        return curves
    for name, group in rows.sort_values("mjd").groupby("name", sort=False):
        flux, err = usable_flux(group)
        upper = group["upper_limit"].to_numpy(bool)
        curves[str(name)] = {
            "mjd": group["mjd"].to_numpy(float).tolist(),
            "flux_jy": flux.tolist(), "err_jy": err.tolist(),
            "upper_limit_jy": np.where(upper, group["upper_limit_jy"].to_numpy(float),
                                       np.nan).tolist()}
    return curves


def light_curve_reader(config: PipelineConfig) -> Callable[[list[str]], LightCurves]:
    """:func:`read_light_curves` over the photometry tables under
    ``<paths.products>/photometry`` (nothing read, nor imported, for no names)."""
    root = Path(config.paths.products) / "photometry"

    def read(names: list[str]) -> LightCurves:
        if not names:
            return {}
        from contimg_dask.photometry.tables import PhotometryTables

        return read_light_curves(PhotometryTables(root), names)

    return read
