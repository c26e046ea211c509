"""Time smearing (ops/smearing.py) against an independent computation: the fringe of a source
averaged over finely sampled uv tracks from ops/uvw.py's UVWs."""

from __future__ import annotations

import numpy as np

from contimg_dask.constants import SPEED_OF_LIGHT
from contimg_dask.ops.smearing import EARTH_ROTATION_RAD_PER_S, time_smearing_peak_ratio, uv_rates
from contimg_dask.ops.uvw import uvw_from_hadec

FREQ_HZ = 1.405e9
DEC = np.radians(16.1)
TAU_S = 12.884902


def _baselines(seed: int = 3) -> np.ndarray:
    """Local-meridian baselines (m) of a T-shaped array like DSA-110's (E-W and N-S arms)."""
    rng = np.random.default_rng(seed)
    east = np.column_stack([np.zeros(40), rng.uniform(-1300, 1300, 40), np.zeros(40)])
    lat = np.radians(37.23)
    north = rng.uniform(-1600, 1600, 40)
    ns = np.column_stack([-north * np.sin(lat), np.zeros(40), north * np.cos(lat)])
    return np.concatenate([east, ns])


def _direct(baselines: np.ndarray, l_dc: float, m_dc: float, tau_s: float) -> float:
    """Mean over baselines of the fringe exp(2πi (u l + v m)) averaged over 201 samples of the
    interval, relative to its value at mid-interval (the unsmeared source)."""
    t = np.linspace(-tau_s / 2, tau_s / 2, 201)
    h = EARTH_ROTATION_RAD_PER_S * t
    uv = np.stack([uvw_from_hadec(baselines, hh, DEC)[:, :2] for hh in h]) * FREQ_HZ / (
        SPEED_OF_LIGHT)
    phase = 2 * np.pi * (uv[..., 0] * l_dc + uv[..., 1] * m_dc)
    fringe = np.exp(1j * (phase - phase[len(t) // 2])).mean(axis=0)
    return float(np.mean(fringe.real))


def test_time_smearing_matches_averaged_fringes() -> None:
    baselines = _baselines()
    rates = uv_rates(baselines, 0.0, DEC, FREQ_HZ)
    for east, north, factor in ((2.0, 0.0, 1), (0.0, 2.0, 1), (1.5, 0.0, 4), (1.0, 1.0, 2)):
        l_dc, m_dc = np.sin(np.radians(east)), np.sin(np.radians(north))
        expected = _direct(baselines, l_dc, m_dc, factor * TAU_S)
        got = time_smearing_peak_ratio(rates, l_dc, m_dc, factor * TAU_S)
        # the losses agree to 2 % of their size (the tracks' curvature is left out)
        assert abs(got - expected) <= 0.02 * (1 - expected) + 1e-6, (east, north, got, expected)
    # Sanity of scale: an E-W offset smears much more than a N-S one at dec 16 (v-rates are
    # sin(dec) of the u-rates' size), and 4 integrations at 1.5 deg lose several per cent.
    assert 1 - time_smearing_peak_ratio(rates, np.radians(1.5), 0, 4 * TAU_S) > 0.02
