"""Simulated light curves with known truth: constant sources with realistic errors (per-epoch
noise that varies from block to block, a residual flux-scale scatter the stated errors
include), and the same with injected extreme-scattering-event dips."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def constant_sources(n_sources: int, n_epochs: int, rng: np.random.Generator,
                     snr_range: tuple[float, float] = (5.0, 500.0),
                     noise_spread: float = 0.2, systematic_fraction: float = 0.01
                     ) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Daily epochs (MJD from 0), fluxes, stated errors (Jy, shape (sources, epochs)) and
    true fluxes of constant sources. Each source's S/N is log-uniform in ``snr_range`` for
    a 1 mJy median noise; each epoch's noise is scaled by a log-normal factor of spread
    ``noise_spread``; a residual scale error of ``systematic_fraction`` scatters every epoch
    and is part of the stated error (as the pipeline's normalised errors include it)."""
    mjd = np.arange(n_epochs, dtype=float)
    noise = 1e-3 * np.exp(noise_spread * rng.standard_normal(n_epochs))
    true = 1e-3 * np.exp(rng.uniform(*np.log(snr_range), n_sources))
    sigma = np.broadcast_to(noise, (n_sources, n_epochs))
    scale = 1.0 + systematic_fraction * rng.standard_normal((n_sources, n_epochs))
    flux = true[:, None] * scale + sigma * rng.standard_normal((n_sources, n_epochs))
    stated = np.sqrt(sigma**2 + (systematic_fraction * true[:, None])**2)
    return mjd, flux, stated, true


def inject_dips(flux: NDArray, mjd: NDArray, true: NDArray, depth: NDArray,
                start_mjd: NDArray, width_days: NDArray) -> NDArray:
    """``flux`` with box dips: each source's flux lowered by ``depth`` x its true flux from
    ``start_mjd`` for ``width_days``."""
    inside = (mjd[None, :] >= start_mjd[:, None]) & (mjd[None, :] < (start_mjd
                                                                      + width_days)[:, None])
    return flux - inside * (depth * true)[:, None]
