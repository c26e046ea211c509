"""Recording an epoch: its measurement table, and the variability table updated from it.

The variability table holds, per catalogue source, the running sums of
ops/variability.py over its normalised light curve, the metrics, and the candidate kinds
already announced. A new epoch that is each source's newest is folded in with O(1) work per
source; an epoch measured out of order, or an image measured again (its table replaced), makes
the affected sources' sums be rebuilt from their measurement tables, so a re-measured epoch
replaces its contribution instead of adding a second one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from contimg_dask.config.schema import PhotometryConfig
from contimg_dask.ops.variability import (
    SUM_COLUMNS,
    add_epoch,
    empty_sums,
    metrics,
    sums_from_lightcurves,
)
from contimg_dask.photometry.candidates import candidate_records, metric_candidates
from contimg_dask.photometry.normalise import FLAG_EPOCH_UNNORMALISED, FLAG_NOT_MEASURED
from contimg_dask.photometry.tables import PhotometryTables
from contimg_dask.science.photometry_catalog import PhotometryCatalog


@dataclass
class EpochUpdate:
    """What recording one epoch changed."""

    table: str  # the measurement table written
    replaced: bool  # it replaced an earlier table of the same image and catalogue
    rebuilt_sources: int  # sources whose sums were rebuilt from their light curves
    new_candidates: list[dict[str, Any]] = field(default_factory=list)


def usable_flux(rows: pd.DataFrame) -> tuple[NDArray, NDArray]:
    """Normalised fluxes and errors (Jy) of ``rows``, NaN where the epoch is not normalised
    or the source not measured."""
    bad = (rows["flags"].to_numpy() & (FLAG_EPOCH_UNNORMALISED | FLAG_NOT_MEASURED)) != 0
    return (np.where(bad, np.nan, rows["norm_flux_jy"].to_numpy(float)),
            np.where(bad, np.nan, rows["norm_err_jy"].to_numpy(float)))


def lightcurve_matrix(measurements: pd.DataFrame, names: NDArray
                      ) -> tuple[NDArray, NDArray, NDArray]:
    """Epoch times (MJD, one per image) and normalised flux and error matrices (len(names),
    images) of ``measurements``; NaN where a source has no usable measurement."""
    images, column = np.unique(measurements["image"].to_numpy(str), return_inverse=True)
    mjd = np.zeros(len(images))
    mjd[column] = measurements["mjd"].to_numpy(float)
    row = pd.Index(names).get_indexer(measurements["name"])
    keep = row >= 0
    flux = np.full((len(names), len(images)), np.nan)
    err = np.full_like(flux, np.nan)
    f, e = usable_flux(measurements)
    flux[row[keep], column[keep]] = f[keep]
    err[row[keep], column[keep]] = e[keep]
    return mjd, flux, err


def _variability_frame(names: NDArray, sums: dict[str, NDArray], kinds: NDArray
                       ) -> pd.DataFrame:
    frame = pd.DataFrame({"name": names, **sums, **metrics(sums)})
    frame["candidate_kinds"] = kinds
    return frame


def record_epoch(tables: PhotometryTables, rows: pd.DataFrame, image_stem: str,
                 catalog: PhotometryCatalog, config: PhotometryConfig) -> EpochUpdate:
    """Write ``rows`` (one image's normalised measurements) and update the variability
    table of ``catalog``'s version (see the module docstring)."""
    cfg = config.variability
    version = catalog.version
    names = catalog.names
    with tables.lock():
        path = tables.measurement_path(image_stem, version)
        replaced = path.is_file()
        tables.write(path, rows)
        previous = tables.variability(version)
        if previous is not None and len(previous) == len(names):
            sums = {k: previous[k].to_numpy(float).copy() for k in SUM_COLUMNS}
            kinds = previous["candidate_kinds"].to_numpy(object).copy()
        else:
            sums, kinds = empty_sums(len(names)), np.full(len(names), "", object)
        index = pd.Index(names).get_indexer(rows["name"])
        flux, err = np.full(len(names), np.nan), np.full(len(names), np.nan)
        f, e = usable_flux(rows)
        flux[index], err[index] = f, e
        mjd = float(rows["mjd"].iloc[0]) if len(rows) else 0.0
        if replaced:
            affected = np.zeros(len(names), bool)
            affected[index] = True
        else:
            affected = add_epoch(sums, mjd, flux, err, cfg.m_min)
        if affected.any():
            chosen = names[affected]
            lc_mjd, lc_flux, lc_err = lightcurve_matrix(
                tables.measurements(version, list(chosen)), chosen)
            rebuilt = sums_from_lightcurves(lc_mjd, lc_flux, lc_err, cfg.m_min)
            for key in SUM_COLUMNS:
                sums[key][affected] = rebuilt[key]
        frame = _variability_frame(names, sums, kinds)
        masks = metric_candidates(frame, cfg)
        announced = pd.Series(kinds.astype(str))
        new = {k: m & ~announced.str.contains(k, regex=False).to_numpy()
               for k, m in masks.items()}
        records = candidate_records(names, new, frame)
        for kind, mask in new.items():
            frame.loc[mask, "candidate_kinds"] = (frame.loc[mask, "candidate_kinds"]
                                                  + f"{kind},")
        tables.write(tables.variability_path(version), frame)
    return EpochUpdate(str(path), replaced, int(affected.sum()), records)
