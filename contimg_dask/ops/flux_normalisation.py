"""Per-epoch flux-scale correction from an ensemble of reference sources.

An epoch's scale is the sigma-clipped median of the ratios measured/expected of its valid
references (bright, isolated, compact, not known to vary); it needs at least
``min_references`` ratios left after clipping, else the epoch is flagged (scale NaN), never
silently used. Its uncertainty is the clipped ratios' robust scatter over sqrt(count)
(x 1.2533, the median's efficiency for Gaussian scatter).

Across epochs (:func:`varying_references`), a reference whose normalised ratios scatter more
than ``max_eta`` (the weighted reduced χ² about its own median) varies: it is dropped from the
ensemble and the scales recomputed.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import NDArray

MAD_TO_SIGMA = 1.4826
MEDIAN_EFFICIENCY = 1.2533


def epoch_scales(ratio: NDArray, usable: NDArray, min_references: int,
                 clip_sigma: float = 3.0, iterations: int = 5
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Scale, its 1σ uncertainty and the number of references used, per epoch.

    ``ratio``: (epochs, references) measured/expected flux; ``usable``: same shape, False
    where a reference is not to be used (not measured, too faint, varying). Epochs with fewer
    than ``min_references`` references left get NaN scale and error.
    """
    with warnings.catch_warnings():  # epochs without any reference: NaN, flagged below
        warnings.simplefilter("ignore", RuntimeWarning)
        return _clipped_scales(ratio, usable, min_references, clip_sigma, iterations)


def _clipped_scales(ratio: NDArray, usable: NDArray, min_references: int, clip_sigma: float,
                    iterations: int) -> tuple[NDArray, NDArray, NDArray]:
    keep = usable & np.isfinite(ratio)
    r = np.where(keep, ratio, np.nan)
    for _ in range(iterations):
        with np.errstate(all="ignore"):
            median = np.nanmedian(r, axis=1, keepdims=True)
            spread = MAD_TO_SIGMA * np.nanmedian(np.abs(r - median), axis=1, keepdims=True)
        inside = np.abs(r - median) <= clip_sigma * np.maximum(spread, 1e-12)
        new = keep & inside
        if np.array_equal(new, keep):
            break
        keep = new
        r = np.where(keep, ratio, np.nan)
    count = keep.sum(axis=1)
    with np.errstate(all="ignore"):
        scale = np.nanmedian(r, axis=1)
        spread = MAD_TO_SIGMA * np.nanmedian(np.abs(r - scale[:, None]), axis=1)
        error = MEDIAN_EFFICIENCY * spread / np.sqrt(count)
    few = count < min_references
    return np.where(few, np.nan, scale), np.where(few, np.nan, error), count


def varying_references(ratio: NDArray, ratio_err: NDArray, scale: NDArray, usable: NDArray,
                       max_eta: float) -> NDArray[np.bool_]:
    """References whose normalised ratios vary: weighted reduced χ² about their median
    above ``max_eta`` (shapes as in :func:`epoch_scales`; ``ratio_err`` 1σ of ``ratio``)."""
    ok = usable & np.isfinite(ratio) & np.isfinite(scale)[:, None] & (ratio_err > 0)
    with np.errstate(all="ignore"):
        normalised = ratio / scale[:, None]
        err = ratio_err / scale[:, None]
        centre = np.nanmedian(np.where(ok, normalised, np.nan), axis=0)
        chi2 = np.where(ok, ((normalised - centre) / err)**2, 0.0).sum(axis=0)
        n = ok.sum(axis=0)
        eta = chi2 / np.maximum(n - 1, 1)
    return (n >= 3) & (eta > max_eta)


def normalise(flux: NDArray, err: NDArray, scale: NDArray, scale_err: NDArray,
              systematic_fraction: float) -> tuple[NDArray, NDArray]:
    """Normalised fluxes and errors (Jy): ``flux/scale``; the error adds the scale's
    uncertainty and ``systematic_fraction`` of the flux in quadrature. ``scale`` broadcasts
    against ``flux``."""
    with np.errstate(all="ignore"):
        f = flux / scale
        e = np.sqrt((err / scale)**2 + (f * scale_err / scale)**2
                    + (systematic_fraction * f)**2)
    return f, e
