"""One epoch's flux-scale correction from its reference sources (ops/flux_normalisation.py):
which measured sources are references, the scale, and the normalised columns.

References: catalogue flux >= ``references.min_flux_jy``, compact (catalogue major axis <=
``max_size_arcsec``), isolated (no catalogue neighbour within ``isolation_beams`` beam FWHM),
in the beam's core (PB >= ``min_pb``, where the PB is known), fitted alone, measured at
S/N >= ``min_snr``, and not known to vary (``excluded``: sources whose normalised light
curve has η above ``max_eta``, from the variability table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from contimg_dask.config.schema import PhotometryConfig
from contimg_dask.ops.flux_normalisation import epoch_scales, normalise
from contimg_dask.photometry.layout import (
    FLAG_EPOCH_UNNORMALISED,
    FLAG_NOT_MEASURED,
    FLAG_UPPER_LIMIT,
)
from contimg_dask.science.photometry_catalog import PhotometryCatalog

__all__ = ["FLAG_EPOCH_UNNORMALISED", "FLAG_NOT_MEASURED", "FLAG_UPPER_LIMIT",
           "normalise_epoch", "reference_mask"]


def reference_mask(rows: pd.DataFrame, catalog: PhotometryCatalog, beam_fwhm_arcsec: float,
                   config: PhotometryConfig, excluded: set[str]) -> np.ndarray:
    """True for the rows (one epoch's measurements) usable as references."""
    cfg = config.references
    index = pd.Index(catalog.table["name"]).get_indexer(rows["name"])
    isolated = catalog.isolated(cfg.isolation_beams * beam_fwhm_arcsec)[index]
    compact = catalog.compact(cfg.max_size_arcsec)[index]
    pb = rows["pb"].to_numpy(float)
    return (isolated & compact
            & (rows["catalog_flux_jy"].to_numpy() >= cfg.min_flux_jy)
            & ~(pb < cfg.min_pb)
            & (rows["cluster_size"].to_numpy() == 1)
            & (rows["snr"].to_numpy() >= cfg.min_snr)
            & rows["measured"].to_numpy(bool)
            & ~rows["name"].isin(excluded).to_numpy())


def normalise_epoch(rows: pd.DataFrame, catalog: PhotometryCatalog, beam_fwhm_arcsec: float,
                    config: PhotometryConfig, excluded: set[str]) -> pd.DataFrame:
    """``rows`` with the columns ``reference``, ``scale``, ``scale_err``, ``n_references``,
    ``norm_flux_jy``, ``norm_err_jy`` and ``flags``. An epoch with fewer than
    ``references.min_count`` references keeps NaN normalised fluxes and the flag
    FLAG_EPOCH_UNNORMALISED."""
    out = rows.copy()
    refs = reference_mask(rows, catalog, beam_fwhm_arcsec, config, excluded)
    ratio = (rows["flux_jy"] / rows["catalog_flux_jy"]).to_numpy()[None, :]
    scale, scale_err, count = epoch_scales(ratio, refs[None, :],
                                           config.references.min_count,
                                           config.references.clip_sigma)
    norm_flux, norm_err = normalise(rows["flux_jy"].to_numpy(), rows["flux_err_jy"].to_numpy(),
                                    scale[0], scale_err[0], config.systematic_fraction)
    flags = (np.where(rows["upper_limit"].to_numpy(bool), FLAG_UPPER_LIMIT, 0)
             | np.where(np.isfinite(scale[0]), 0, FLAG_EPOCH_UNNORMALISED)
             | np.where(rows["measured"].to_numpy(bool), 0, FLAG_NOT_MEASURED))
    out["reference"] = refs
    out["scale"] = scale[0]
    out["scale_err"] = scale_err[0]
    out["n_references"] = int(count[0])
    out["norm_flux_jy"] = norm_flux
    out["norm_err_jy"] = norm_err
    out["flags"] = flags.astype(np.int64)
    return out
