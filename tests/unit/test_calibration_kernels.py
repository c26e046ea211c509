"""Calibration kernels on synthetic arrays with known gains."""

from __future__ import annotations

import numpy as np
import pytest

from contimg_dask.ops.calibration import (
    apply_gains,
    fill_small_gaps,
    interpolate_in_time,
    normal_sums,
    point_source_visibilities,
    reference_to_antenna,
    stefcal,
)

N_ANT, N_T, N_F, N_P = 10, 6, 4, 2


def _baselines(n_ant: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n_ant)


def _corrupt(seed: int, noise_jy: float) -> dict:
    rng = np.random.default_rng(seed)
    ant1, ant2 = _baselines(N_ANT)
    gains = (rng.uniform(0.5, 1.5, (N_ANT, N_P))
             * np.exp(1j * rng.uniform(-np.pi, np.pi, (N_ANT, N_P))))
    model = (rng.uniform(1, 3, (N_T, len(ant1), N_F, N_P))
             * np.exp(1j * rng.uniform(-np.pi, np.pi, (N_T, len(ant1), N_F, N_P))))
    vis = np.conj(gains[ant1])[None, :, None, :] * gains[ant2][None, :, None, :] * model
    vis = vis + noise_jy * (rng.standard_normal(vis.shape) + 1j * rng.standard_normal(vis.shape))
    return {"ant1": ant1, "ant2": ant2, "gains": gains, "model": model.astype(np.complex64),
            "vis": vis.astype(np.complex64), "weight": np.ones(vis.shape, np.float32),
            "flag": np.zeros(vis.shape, bool)}


def _solve(case: dict, time_cell: np.ndarray, n_cells: int):
    sums = normal_sums(case["vis"], case["model"], case["weight"], case["flag"], case["ant1"],
                       case["ant2"], time_cell, n_cells)
    # one cell for the whole chunk, per polarization: (pol, baseline)
    total = sums.total((0, 1))
    return stefcal(total, case["ant1"], case["ant2"], N_ANT, 200, 1e-12)


def test_stefcal_recovers_gains_without_noise() -> None:
    case = _corrupt(1, 0.0)
    solution = _solve(case, np.zeros(N_T, int), 1)
    recovered = reference_to_antenna(solution.gains, 0).T  # (ant, pol)
    truth = reference_to_antenna(case["gains"].T, 0).T
    np.testing.assert_allclose(recovered, truth, rtol=1e-6, atol=1e-6)
    assert np.abs(solution.chi2_reduced).max() < 1e-6  # complex64 rounding of |V|² ~ 10


def test_stefcal_snr_matches_the_noise() -> None:
    """SNR is |g| / σ(g): with σ = 0.05 Jy per component the scatter of the recovered gains
    about the truth must match the reported SNR within 20 %."""
    errors, expected = [], []
    for seed in range(20):
        case = _corrupt(seed, 0.05)
        solution = _solve(case, np.zeros(N_T, int), 1)
        recovered = reference_to_antenna(solution.gains, 0).T
        truth = reference_to_antenna(case["gains"].T, 0).T
        errors.append(np.abs(recovered - truth)[1:] / np.abs(truth[1:]))
        expected.append(1.0 / solution.snr.T[1:])
    rms_error = np.sqrt(np.mean(np.square(errors)))
    rms_expected = np.sqrt(np.mean(np.square(expected)))
    assert rms_error == pytest.approx(rms_expected, rel=0.2)


def test_flags_and_autocorrelations_are_ignored() -> None:
    case = _corrupt(3, 0.0)
    ant1, ant2 = case["ant1"], case["ant2"]
    bad = (ant1 == 2) & (ant2 == 5)
    case["vis"][:, bad] = 1e6
    case["flag"][:, bad] = True
    case["vis"][:, ant1 == ant2] = 1e6  # autocorrelations must not enter
    solution = _solve(case, np.zeros(N_T, int), 1)
    np.testing.assert_allclose(reference_to_antenna(solution.gains, 0).T,
                               reference_to_antenna(case["gains"].T, 0).T, rtol=1e-6, atol=1e-6)


def test_an_antenna_without_data_is_undetermined() -> None:
    case = _corrupt(4, 0.0)
    case["flag"][:, (case["ant1"] == 7) | (case["ant2"] == 7)] = True
    solution = _solve(case, np.zeros(N_T, int), 1)
    assert np.isnan(solution.gains[:, 7]).all()
    assert (solution.snr[:, 7] == 0).all()
    assert np.isfinite(np.delete(solution.gains, 7, axis=1)).all()


def _random_gains(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(0.5, 1.5, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))


def test_apply_inverts_the_corruption() -> None:
    """Data corrupted here, in NumPy, by g = G(t, ant, pol) · B(ν, ant, pol) with random
    complex G varying in time and a random complex bandpass, as conj(g_a) g_b: apply gives
    back the model, and the weights times |g_a g_b|² (the noise variance divided by
    |g_a g_b|²: CASA applycal's calwt=True, pinned against CASA in test_caltables.py)."""
    rng = np.random.default_rng(5)
    case = _corrupt(5, 0.0)
    a1, a2 = case["ant1"], case["ant2"]
    gain_t = _random_gains(rng, (N_T, N_ANT, N_P))
    bandpass = _random_gains(rng, (N_F, N_ANT, N_P))
    g = gain_t[:, :, None, :] * bandpass.transpose(1, 0, 2)[None]  # (time, ant, freq, pol)
    vis = (np.conj(g[:, a1]) * g[:, a2] * case["model"]).astype(np.complex64)
    weight = rng.uniform(0.5, 2.0, vis.shape).astype(np.float32)
    corrected, out_weight, flag = apply_gains(vis, weight, case["flag"], gain_t, bandpass,
                                              a1, a2)
    np.testing.assert_allclose(corrected, case["model"], rtol=1e-5)
    np.testing.assert_allclose(out_weight, weight * np.abs(g[:, a1] * g[:, a2]) ** 2,
                               rtol=1e-5)
    assert not flag.any()
    bandpass[2, 3, 1] = np.nan  # a flagged solution flags every baseline of antenna 3
    _, out_weight, flag = apply_gains(vis, weight, case["flag"], gain_t, bandpass, a1, a2)
    has3 = (a1 == 3) | (a2 == 3)
    assert flag[:, has3, 2, 1].all() and (out_weight[:, has3, 2, 1] == 0).all()
    assert flag.sum() == N_T * has3.sum()


def test_stefcal_recovers_a_bandpass_channel_by_channel() -> None:
    """Per-channel solves (one cell per channel) of data corrupted by a random complex
    bandpass recover it, with the reference antenna's phase removed."""
    rng = np.random.default_rng(8)
    case = _corrupt(8, 0.0)
    a1, a2 = case["ant1"], case["ant2"]
    bandpass = _random_gains(rng, (N_F, N_ANT, N_P))
    b = bandpass.transpose(1, 0, 2)  # (ant, freq, pol)
    vis = (np.conj(b[a1])[None] * b[a2][None] * case["model"]).astype(np.complex64)
    for f in range(N_F):
        sl = slice(f, f + 1)
        sums = normal_sums(vis[:, :, sl], case["model"][:, :, sl], case["weight"][:, :, sl],
                           case["flag"][:, :, sl], a1, a2, np.zeros(N_T, int), 1)
        solution = stefcal(sums.total((0, 1)), a1, a2, N_ANT, 200, 1e-12)
        np.testing.assert_allclose(reference_to_antenna(solution.gains, 0).T,
                                   reference_to_antenna(bandpass[f].T, 0).T, rtol=1e-5,
                                   atol=1e-5)


def test_point_source_phase_convention() -> None:
    """A source whose path is longer by Δw leads the phase centre by 2πνΔw/c (the correlator's
    convention: V = S exp(+2πi ν (w_s - w_0) / c))."""
    dw = np.array([[[0.1, -0.25]]])  # (source, time, baseline), metres
    flux = np.full((1, 1, 2), 3.0)
    freq = np.array([1.3e9, 1.4e9])
    model = point_source_visibilities(dw, flux, freq, 2)
    expected = 3.0 * np.exp(2j * np.pi * freq[None, :] * dw[0, 0][:, None] / 299792458.0)
    np.testing.assert_allclose(model[0, :, :, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(model[..., 0], model[..., 1])


def test_fill_small_gaps() -> None:
    n = 12
    phase = np.linspace(0, 3, n)
    values = (1 + 0.1 * np.arange(n)) * np.exp(1j * phase)
    flags = np.zeros(n, bool)
    flags[[3, 4]] = True  # a 2-channel gap: filled
    flags[7:11] = True  # 4 channels: too long for max_gap 3
    flags[0] = True  # an edge: never extrapolated
    filled, left = fill_small_gaps(values[:, None], flags[:, None], 3)
    np.testing.assert_allclose(filled[[3, 4], 0], values[[3, 4]], rtol=1e-12)
    assert list(np.flatnonzero(left[:, 0])) == [0, 7, 8, 9, 10]


def test_interpolate_in_time_linear_amplitude_and_phase() -> None:
    t_sol = np.array([0.0, 60.0, 120.0])
    g = np.array([1.0, 2.0 * np.exp(0.4j), 3.0 * np.exp(3.0j)])
    flags = np.array([False, False, False])
    out, out_flags = interpolate_in_time(t_sol, g, flags, np.array([-10.0, 30.0, 90.0, 200.0]))
    assert out[0] == pytest.approx(1.0)  # held before the first
    assert out[1] == pytest.approx(1.5 * np.exp(0.2j))
    assert out[2] == pytest.approx(2.5 * np.exp(1.7j))
    assert out[3] == pytest.approx(3.0 * np.exp(3.0j))
    assert not out_flags.any()
    out, out_flags = interpolate_in_time(t_sol, g, np.array([False, True, False]),
                                         np.array([60.0]))
    assert out[0] == pytest.approx(2.0 * np.exp(1.5j))  # across the flagged solution
