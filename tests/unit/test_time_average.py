"""Baseline-dependent time averaging (ops/time_average.py): the kernels against brute-force
loops, the factors against their definition, and the loss bound against fringes averaged
over finely sampled uv tracks (the approach of tests/unit/test_time_smearing.py)."""

from __future__ import annotations

import numpy as np

from contimg_dask.constants import SPEED_OF_LIGHT
from contimg_dask.ops.smearing import EARTH_ROTATION_RAD_PER_S
from contimg_dask.ops.time_average import (
    TimeAveraging,
    average_rows,
    averaging_factors,
    baseline_fringe_rates,
    row_centroids,
    row_exposures,
    sinc_argument_for_loss,
)
from contimg_dask.ops.uvw import uvw_from_hadec
from tests.unit.test_time_smearing import DEC, FREQ_HZ, TAU_S, _baselines


def _random_block(rng: np.random.Generator, n_t: int = 7, n_b: int = 5, n_c: int = 3,
                  n_p: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = (n_t, n_b, n_c, n_p)
    vis = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    flag = rng.random(shape) < 0.3
    flag[:, 0] = True  # one baseline entirely flagged
    weight = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    return vis, flag, weight


def test_average_rows_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    vis, flag, weight = _random_block(rng)
    n_t, n_b = vis.shape[:2]
    factors = np.array([3, 1, 2, 7, 4])
    averaging = TimeAveraging.from_factors(factors, n_t)
    # every integration of every baseline is in exactly one row
    covered = np.zeros((n_t, n_b), int)
    for b, t0, t1 in zip(averaging.baseline, averaging.start, averaging.stop, strict=True):
        covered[t0:t1, b] += 1
    assert (covered == 1).all()
    assert averaging.n_rows == sum(-(-n_t // n) for n in factors)
    mid = averaging.start + averaging.stop
    assert (np.diff(mid) >= 0).all()  # time order
    out_vis, out_flag, out_weight = average_rows(averaging, vis, flag, weight)
    for r, (b, t0, t1) in enumerate(zip(averaging.baseline, averaging.start, averaging.stop,
                                        strict=True)):
        for c in range(vis.shape[2]):
            for p in range(vis.shape[3]):
                v, f, w = vis[t0:t1, b, c, p], flag[t0:t1, b, c, p], weight[t0:t1, b, c, p]
                good = ~f
                if good.any():
                    expected = np.sum(w[good] * v[good]) / np.sum(w[good])
                    assert not out_flag[r, c, p]
                    np.testing.assert_allclose(out_weight[r, c, p], w[good].sum(), rtol=1e-6)
                else:
                    expected = v.mean()
                    assert out_flag[r, c, p]
                np.testing.assert_allclose(out_vis[r, c, p], expected, rtol=1e-5, atol=1e-6)


def test_row_centroids_weighted_by_unflagged_weights() -> None:
    rng = np.random.default_rng(2)
    _, flag, weight = _random_block(rng)
    n_t, n_b = flag.shape[:2]
    uvw = rng.normal(size=(n_t, n_b, 3)) * 100
    averaging = TimeAveraging.from_factors(np.array([2, 3, 1, 7, 5]), n_t)
    got = row_centroids(averaging, uvw, weight, flag)
    for r, (b, t0, t1) in enumerate(zip(averaging.baseline, averaging.start, averaging.stop,
                                        strict=True)):
        w = np.array([weight[t, b][~flag[t, b]].astype(float).sum() for t in range(t0, t1)])
        expected = (uvw[t0:t1, b].mean(axis=0) if w.sum() == 0
                    else (w[:, None] * uvw[t0:t1, b]).sum(axis=0) / w.sum())
        np.testing.assert_allclose(got[r], expected, rtol=1e-10)


def test_row_exposures_count_integrations_with_unflagged_data() -> None:
    """EXPOSURE: the interval times the integrations holding an unflagged sample; a row with
    none keeps its span (INTERVAL)."""
    rng = np.random.default_rng(4)
    _, flag, _ = _random_block(rng)
    n_t = flag.shape[0]
    flag[2, 1] = True  # an integration wholly flagged inside a row of baseline 1
    averaging = TimeAveraging.from_factors(np.array([2, 3, 1, 7, 5]), n_t)
    got = row_exposures(averaging, flag, 12.5)
    for r, (b, t0, t1) in enumerate(zip(averaging.baseline, averaging.start, averaging.stop,
                                        strict=True)):
        live = sum(not flag[t, b].all() for t in range(t0, t1))
        assert got[r] == 12.5 * (live if live else t1 - t0)
    assert (got < 12.5 * (averaging.stop - averaging.start)).any()


def test_factors_are_the_largest_within_the_loss() -> None:
    x_max = sinc_argument_for_loss(0.01)
    np.testing.assert_allclose(np.sinc(x_max), 0.99, atol=1e-12)
    rates = np.array([0.0, 1e-4, 1e-3, 3e-3, 1e-2, 1.0])
    n = averaging_factors(rates, TAU_S, 0.01, 24)
    assert n[0] == 24 and n[-1] == 1
    for rate, k in zip(rates[1:-1], n[1:-1], strict=True):
        # n = 1 is kept even when the recorded integration alone loses more
        assert k == 1 or np.sinc(rate * k * TAU_S) >= 0.99
        assert k == 24 or np.sinc(rate * (k + 1) * TAU_S) < 0.99
    assert list(n[1:-1]) == [24, 6, 2, 1]


def _tracks(baselines: np.ndarray, n_t: int, oversample: int) -> np.ndarray:
    """UVWs (wavelengths) at ``oversample`` points inside each of ``n_t`` integrations
    around transit: (n_t, oversample, baseline, 3)."""
    t = (np.arange(n_t)[:, None] + (np.arange(oversample) + 0.5)[None, :] / oversample
         - n_t / 2) * TAU_S
    h = EARTH_ROTATION_RAD_PER_S * t
    return np.stack([[uvw_from_hadec(baselines, hh, DEC) for hh in row] for row in h]) * (
        FREQ_HZ / SPEED_OF_LIGHT)


def test_loss_bound_holds_for_directly_averaged_fringes() -> None:
    """Sources at the field edge in eight directions: each baseline's fringe, averaged over
    its rows' spans of finely sampled track, keeps at least 1 - L of its amplitude, and the
    image's peak (the mean over visibilities) matches the sinc prediction's bound."""
    baselines = _baselines()
    n_t, oversample, radius, max_loss = 24, 16, np.radians(2.0), 0.01
    tracks = _tracks(baselines, n_t, oversample)
    centres = tracks.mean(axis=1) * SPEED_OF_LIGHT / FREQ_HZ  # per integration, metres
    rates = baseline_fringe_rates(centres, TAU_S, FREQ_HZ, radius)
    factors = averaging_factors(rates, TAU_S, max_loss, n_t)
    averaging = TimeAveraging.from_factors(factors, n_t)
    assert factors.max() > 1 and factors.min() == 1  # short baselines average, long do not
    assert averaging.n_rows < 0.7 * n_t * len(baselines)
    x_max = sinc_argument_for_loss(max_loss)
    for angle in np.radians(np.arange(0, 360, 45)):
        l_dc, m_dc = np.sin(radius) * np.cos(angle), np.sin(radius) * np.sin(angle)
        n_dc = np.sqrt(1 - l_dc**2 - m_dc**2) - 1
        phase = 2 * np.pi * (tracks[..., 0] * l_dc + tracks[..., 1] * m_dc
                             + tracks[..., 2] * n_dc)
        fringe = np.exp(1j * phase)  # (n_t, oversample, baseline)
        for b, t0, t1 in zip(averaging.baseline, averaging.start, averaging.stop, strict=True):
            samples = fringe[t0:t1, :, b]
            amplitude = abs(samples.mean())
            # the bound, for baselines averaged beyond one integration; a single integration
            # loses what it loses (the recorded data)
            turns = rates[b] * (t1 - t0) * TAU_S
            assert amplitude >= np.sinc(turns) - 1e-3, (b, t0, t1, amplitude)
            if t1 - t0 > 1:
                assert amplitude >= 1 - max_loss - 1e-3, (b, t0, t1, amplitude)
                assert turns <= x_max + 1e-12
