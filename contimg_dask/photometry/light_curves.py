"""Read-only light curves for the dashboard (``contimg dashboard`` injects
:func:`light_curve_reader` into the monitoring layer, which cannot import photometry).

A light curve is the source's rows in the measurement tables of the newest catalogue
version, in time order: ``mjd`` (MJD, UTC), ``flux_jy``/``err_jy`` the normalised flux
density and its 1σ error (Jy; NaN where the epoch is not normalised or the source not
measured, as the variability metrics use them) and ``upper_limit_jy`` (Jy, NaN unless the
source was below the detection limit).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.photometry.record import usable_flux
from contimg_dask.photometry.tables import PhotometryTables, photometry_root

LightCurves = dict[str, dict[str, list[float]]]


def read_light_curves(tables: PhotometryTables, names: list[str]) -> LightCurves:
    """The light curves of ``names`` that have measurements (the others are left out)."""
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
    """:func:`read_light_curves` over the configured photometry tables."""
    tables = PhotometryTables(photometry_root(config))
    return lambda names: read_light_curves(tables, names)
