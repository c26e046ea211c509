"""The linear mosaic's arithmetic (Cornwell 1988; the telescope's PB²/σ² weighting).

For each input block image (apparent brightness I, Jy/beam; primary beam PB, unitless;
measured noise σ of the apparent image, Jy/beam), at each output pixel where PB >= cutoff:

    w = PB² / σ²                  (the inverse variance of the PB-corrected I/PB)
    S += w · I / PB  = PB · I / σ²
    W += w

and then mosaic = S / W (Jy/beam, PB-corrected), noise = 1 / √W (Jy/beam). Pixels that no
input covers above the cutoff are NaN in both, never 0.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def accumulate(weighted_sum: NDArray[np.float64], weight_sum: NDArray[np.float64],
               image: NDArray, pb: NDArray, sigma_jy: float, pb_cutoff: float) -> int:
    """Add one input (already on the output grid; NaN where it does not reach) to the
    accumulators in place. Returns the number of output pixels it contributed to."""
    with np.errstate(invalid="ignore"):
        use = np.isfinite(image) & np.isfinite(pb) & (pb >= pb_cutoff)
    inverse_variance = 1.0 / (sigma_jy * sigma_jy)
    p = pb[use]
    weighted_sum[use] += p * image[use] * inverse_variance
    weight_sum[use] += p * p * inverse_variance
    return int(np.count_nonzero(use))


def finalise(weighted_sum: NDArray[np.float64], weight_sum: NDArray[np.float64]
             ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The mosaic S/W and its noise 1/√W (Jy/beam), NaN where W is 0."""
    covered = weight_sum > 0
    mosaic = np.full(weight_sum.shape, np.nan, np.float32)
    noise = np.full(weight_sum.shape, np.nan, np.float32)
    mosaic[covered] = weighted_sum[covered] / weight_sum[covered]
    noise[covered] = 1.0 / np.sqrt(weight_sum[covered])
    return mosaic, noise
