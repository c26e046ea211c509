"""Random skies for the simulator: point sources with power-law spectra and variability.

Sources and catalogue files are those of :mod:`contimg_dask.science.skymodel`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from contimg_dask.config.schema import SkyConfig
from contimg_dask.science.skymodel import PointSource


def _power_law_fluxes(rng: np.random.Generator, n: int, smin: float, smax: float,
                      index: float) -> NDArray[np.float64]:
    """Draw ``n`` fluxes from dN/dS ∝ S^index between ``smin`` and ``smax``."""
    u = rng.random(n)
    a = index + 1.0
    if abs(a) < 1e-9:
        return smin * (smax / smin) ** u
    return (smin**a + u * (smax**a - smin**a)) ** (1.0 / a)


def random_sky(rng: np.random.Generator, ra_min_deg: float, ra_max_deg: float,
               dec_centre_deg: float, config: SkyConfig) -> list[PointSource]:
    """Random point sources over the strip RA [ra_min, ra_max] (deg, may exceed 360) widened by
    the field radius, dec within the field radius of ``dec_centre_deg``.

    The number of sources is ``n_random_sources`` per circular field of ``field_radius_deg``.
    """
    radius = config.field_radius_deg
    cos_dec = np.cos(np.radians(dec_centre_deg))
    ra_lo = ra_min_deg - radius / cos_dec
    ra_hi = ra_max_deg + radius / cos_dec
    strip_area = (ra_hi - ra_lo) * cos_dec * 2 * radius
    n = rng.poisson(config.n_random_sources * strip_area / (np.pi * radius**2))
    ra = rng.uniform(ra_lo, ra_hi, n) % 360.0
    dec = dec_centre_deg + rng.uniform(-radius, radius, n)
    flux = _power_law_fluxes(rng, n, config.min_flux_jy, config.max_flux_jy,
                             config.flux_power_law_index)
    alpha = rng.normal(config.spectral_index_mean, config.spectral_index_sd, n)
    variable = rng.random(n) < config.variable_fraction
    return [
        PointSource(name=f"SIM{i:04d}", ra_deg=float(ra[i]), dec_deg=float(dec[i]),
                    flux_jy=float(flux[i]), ref_freq_hz=config.reference_frequency_hz,
                    spectral_index=float(alpha[i]),
                    variability_rms=config.variability_rms if variable[i] else 0.0)
        for i in range(n)
    ]


def block_flux_scale(sources: list[PointSource], seed: int, block_index: int) -> NDArray:
    """Multiplicative flux factor of each source in block ``block_index`` (1 for steady ones).

    Deterministic in (seed, block_index), so a block's truth is reproducible on its own.
    """
    rng = np.random.default_rng([seed, 7919, block_index])
    rms = np.array([s.variability_rms for s in sources], dtype=float)
    return np.clip(1.0 + rms * rng.standard_normal(len(sources)), 0.05, None)

