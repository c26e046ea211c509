"""The flagging kernels against NumPy/SciPy and against injected RFI with known truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from contimg_dask.ops import order_statistics
from contimg_dask.ops.flagging import FlagParameters, rfi_detection
from contimg_dask.testing.flagging import flag_subband

PARAMS = FlagParameters(
    zeros=True, autocorrelations=True, amplitude_clip_jy=None, bad_antenna_power_sigma=5.0,
    bad_antenna_noise_factor=10.0, bad_antenna_flagged_fraction=0.95, sumthreshold=True,
    sumthreshold_sigma=6.0, sumthreshold_rho=1.5, sumthreshold_windows=(1, 2, 4, 8, 16),
    iterations=2, background_window=(5, 5), array_outlier_sigma=7.0, mad_clip_sigma=7.0,
    extension_sigma=3.0, mostly_flagged_fraction=0.7)


@pytest.mark.parametrize("kind", ["normal", "ties", "constant", "outliers"])
def test_select_and_median_match_numpy(kind: str) -> None:
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 10, 47, 48, 1152, 4561):
        x = rng.normal(size=n).astype(np.float32)
        if kind == "ties":
            x = np.round(x)
        elif kind == "constant":
            x[:] = 3.0
        elif kind == "outliers":
            x[::7] *= 1e4
        assert order_statistics.median(x.copy(), n) == pytest.approx(np.median(x), rel=1e-7)
        k = int(rng.integers(n))
        y = x.copy()
        kth = order_statistics.select(y, n, k)
        assert kth == np.sort(x)[k]
        assert (y[:k] <= kth).all()


@pytest.mark.parametrize("kind", ["normal", "ties", "sorted", "outliers", "unrepresentative"])
def test_sampled_median_is_exact(kind: str) -> None:
    """The bracketed median equals numpy's, also where the sample is unrepresentative and
    its bracket misses the middle (the whole set is then selected)."""
    rng = np.random.default_rng(3)
    work = np.empty(5000, np.float32)
    sample = np.empty(order_statistics.MEDIAN_SAMPLE, np.float32)
    for n in (100, 511, 512, 1152, 1153, 4560):
        x = rng.normal(size=n).astype(np.float32)
        if kind == "ties":
            x = np.round(x)
        elif kind == "sorted":
            x = np.sort(x)[::-1].copy()
        elif kind == "outliers":
            x[::5] *= 1e4
        elif kind == "unrepresentative":
            x[(np.arange(sample.size) * n) // sample.size] = 100.0  # every sampled value
        assert order_statistics.median_sampled(x.copy(), n, work, sample) == pytest.approx(
            np.median(x), rel=1e-7)


def test_pooled_median_and_mad_are_exact() -> None:
    """Median and MAD over unflagged, finite samples, as numpy on the selected values, for
    smooth, tied (+0.0 and -0.0), offset and non-finite data."""
    rng = np.random.default_rng(2)
    for case in range(5):
        r = (rng.normal(size=(3, 24, 48, 16)) * 2.5).astype(np.float32)
        if case == 1:
            r = np.round(r)  # many exact ties, -0.0 and +0.0
        elif case == 2:
            r += 1e5
        elif case == 3:
            r.flat[::5] = np.nan
            r.flat[1::11] = np.inf
        elif case == 4:
            r[:] = 7.0
        state = (rng.random(r.shape) < 0.05).astype(np.uint8)
        histogram = order_statistics.key_histogram(r, state, 0.0, False)
        centre = order_statistics.pooled_median(r, state, 0.0, False, histogram)
        mad = order_statistics.pooled_mad(r, state, centre, histogram)
        values = r[(state == 0) & np.isfinite(r)]
        assert centre == np.median(values)
        assert mad == np.median(np.abs(values - np.float32(centre)))


@pytest.mark.parametrize("n", [1, 2, 5, 24, 48])
def test_lane_medians_sort_every_lane(n: int) -> None:
    rng = np.random.default_rng(n)
    network = order_statistics.sorting_network(n)
    rows = order_statistics.network_rows(network, n)
    values = np.full((rows, 37), np.inf, np.float32)
    values[:n] = rng.normal(size=(n, 37))
    values[:n][rng.random((n, 37)) < 0.2] = np.inf  # invalid samples
    count = np.isfinite(values).sum(axis=0)
    expected = [np.median(values[:, q][np.isfinite(values[:, q])]) if count[q] else np.nan
                for q in range(37)]
    out = np.empty(37, np.float32)
    order_statistics.lane_medians(values, count, network, out)
    np.testing.assert_allclose(out, expected, rtol=1e-7)


@pytest.mark.parametrize("length", [1, 2, 3, 11, 48])
def test_background_smoothing_matches_scipy(length: int) -> None:
    """Both smoothing directions equal scipy's gaussian_filter1d (nearest edges), also on
    axes shorter than the kernel."""
    rng = np.random.default_rng(length)
    width = 5
    weights = rfi_detection.gaussian_weights(width)
    x = rng.normal(size=(length, length + 3, 4)).astype(np.float32)
    out = np.empty_like(x)
    rfi_detection._smooth_time(x.reshape(length, -1), weights, out.reshape(length, -1))
    np.testing.assert_allclose(out, gaussian_filter1d(x, width / 4, axis=0, mode="nearest"),
                               atol=1e-6)
    rfi_detection._smooth_frequency(x, weights, out)
    np.testing.assert_allclose(out, gaussian_filter1d(x, width / 4, axis=1, mode="nearest"),
                               atol=1e-6)


def test_sumthreshold_finds_an_injected_faint_line_and_burst() -> None:
    """A narrowband line at 2 σ per sample and a 3-integration broadband burst at 2.5 σ, far
    below the 6 σ single-sample threshold, are found by the long windows (a few low samples
    amid flagged ones stay unflagged, by design: flagged samples count as the threshold);
    noise alone gives almost no flags, and single samples alone find nothing."""
    rng = np.random.default_rng(4)
    n_t, n_f, n_q = 24, 48, 16
    residual = rng.normal(size=(n_t, n_f, n_q)).astype(np.float32)
    truth = np.zeros(residual.shape, bool)
    truth[:, 17, :8] = True  # line in planes 0-7
    truth[10:13, :, 8:] = True  # burst in planes 8-15
    residual[:, 17, :8] += 2.0
    residual[10:13, :, 8:] += 2.5
    windows, scale = rfi_detection.sumthreshold_scale(PARAMS)
    thresholds = np.repeat(scale[:, None], n_q, axis=1)  # σ = 1
    scratch = rfi_detection._sumthreshold_scratch(n_t, n_f, n_q)
    flags = np.zeros(residual.shape, bool)
    rfi_detection._sumthreshold_block(residual, flags, thresholds, windows, scratch)
    assert flags[truth].mean() > 0.97
    assert flags[:, 17, :8].mean(axis=0).min() > 0.9  # every plane's line
    assert flags[10:13, :, 8:].mean(axis=(0, 1)).min() > 0.9  # every plane's burst
    assert flags[~truth].mean() < 0.005
    single = np.zeros(residual.shape, bool)
    rfi_detection._sumthreshold_block(residual, single, thresholds[:1], windows[:1], scratch)
    assert not single.any()


def _synthetic_chunk(seed: int) -> tuple[np.ndarray, ...]:
    """12 antennas, 24 integrations x 32 channels x 2 pols of 1 Jy noise plus a smooth sky
    term, a narrowband emitter, a burst and a bad antenna; returns vis, ant1, ant2 and the
    RFI truth."""
    rng = np.random.default_rng(seed)
    ant1, ant2 = np.triu_indices(12)
    shape = (24, ant1.size, 32, 2)
    vis = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)
    vis += 3.0 * np.exp(1j * np.linspace(0, 2, 32))[None, None, :, None]
    autos = ant1 == ant2
    vis[:, autos] = 50.0 + rng.normal(size=(24, autos.sum(), 32, 2))
    truth = np.zeros(shape, bool)
    truth[:, ~autos, 9] = True
    vis[:, ~autos, 9] += 8.0
    truth[5:7][:, ~autos] = True
    vis[5:7][:, ~autos] += 6.0
    bad = (ant1 == 4) | (ant2 == 4)
    vis[:, bad & ~autos] *= 30.0
    vis[:, bad & autos] *= 20.0
    return vis.astype(np.complex64), ant1, ant2, truth, bad


def test_flag_subband_recall_false_flags_and_bad_antenna() -> None:
    vis, ant1, ant2, truth, bad = _synthetic_chunk(5)
    ingest = np.zeros(vis.shape, bool)
    ingest[0, 3, 0, 0] = True
    flags = flag_subband(vis, ingest, ant1, ant2, PARAMS)
    assert ingest.sum() == 1  # the input is not modified
    assert flags[0, 3, 0, 0]
    cross = (ant1 != ant2) & ~bad
    assert flags[:, ant1 == ant2].all()
    assert flags[:, bad].all()
    assert flags[:, cross][truth[:, cross]].all()
    assert flags[:, cross][~truth[:, cross]].mean() < 0.01


def test_flag_subband_flags_zeros_and_non_finite() -> None:
    vis, ant1, ant2, *_ = _synthetic_chunk(6)
    vis[3, 20, 4, 1] = 0
    vis[7, 30, 8, 0] = np.nan
    flags = flag_subband(vis, np.zeros(vis.shape, bool), ant1, ant2, PARAMS)
    assert flags[3, 20, 4, 1] and flags[7, 30, 8, 0]
    everything = flag_subband(np.full(vis.shape, np.nan, np.complex64),
                              np.zeros(vis.shape, bool), ant1, ant2, PARAMS)
    assert everything.all()


def test_steps_switch_off() -> None:
    vis, ant1, ant2, *_ = _synthetic_chunk(7)
    off = dataclasses.replace(PARAMS, sumthreshold=False, array_outlier_sigma=None,
                              mad_clip_sigma=None,
                              extension_sigma=None, bad_antenna_noise_factor=None,
                              bad_antenna_power_sigma=None, autocorrelations=False)
    flags = flag_subband(vis, np.zeros(vis.shape, bool), ant1, ant2, off)
    assert not flags.any()


# Every step switched off alone; each test below fails when its step does nothing.
ALL_OFF = dataclasses.replace(
    PARAMS, zeros=False, autocorrelations=False, bad_antenna_power_sigma=None,
    bad_antenna_noise_factor=None, sumthreshold=False, array_outlier_sigma=None,
    mad_clip_sigma=None, extension_sigma=None, mostly_flagged_fraction=1.0)


def _alone(seed: int, ingest: np.ndarray | None = None, **step: object) -> tuple:
    vis, ant1, ant2, truth, bad = _synthetic_chunk(seed)
    flags = flag_subband(vis, np.zeros(vis.shape, bool) if ingest is None else ingest, ant1,
                         ant2, dataclasses.replace(ALL_OFF, **step))
    autos = ant1 == ant2
    return flags, autos, bad, (~autos & ~bad), truth


def test_autocorrelation_step_alone_flags_every_autocorrelation_and_nothing_else() -> None:
    flags, autos, _, _, _ = _alone(7, autocorrelations=True)
    assert flags[:, autos].all() and not flags[:, ~autos].any()


@pytest.mark.parametrize("step", [{"bad_antenna_power_sigma": 5.0},
                                  {"bad_antenna_noise_factor": 10.0}])
def test_each_bad_antenna_step_alone_flags_the_bad_antenna(step: dict) -> None:
    """The autocorrelation-power test and the baseline-scatter test each find antenna 4
    (30x amplitude) on their own, and flag nothing else."""
    flags, _, bad, _, _ = _alone(7, **step)
    assert flags[:, bad].all() and not flags[:, ~bad].any()


def test_sumthreshold_alone_finds_the_line_and_the_burst() -> None:
    """Measured alone: recall 0.994 of the 8σ line and 6σ burst, false flags 1e-5."""
    flags, _, _, cross, truth = _alone(7, sumthreshold=True)
    found = flags[:, cross]
    assert found[truth[:, cross]].mean() > 0.99
    assert found[~truth[:, cross]].mean() < 1e-4


def test_mad_clip_alone_finds_the_burst_and_extension_grows_it() -> None:
    """The 7σ clips alone (the array-wide outliers of step 4 and the MAD clip of step 7, which
    shared one threshold before ``array_outlier_sigma``) flag the broadband burst (every
    sample) and part of the line; growing the flags to neighbours above 3σ then flags more
    of the line (measured: 12 % then 27 % of it)."""
    clips = {"mad_clip_sigma": 7.0, "array_outlier_sigma": 7.0}
    flags, _, _, cross, _ = _alone(7, **clips)
    assert flags[5:7][:, cross].all()
    line_clip = flags[:, cross, 9].mean()
    grown, _, _, _, _ = _alone(7, **clips, extension_sigma=3.0)
    assert grown[:, cross, 9].mean() > 1.5 * line_clip > 0


def test_mostly_flagged_channels_and_integrations_are_flagged_whole() -> None:
    """A channel flagged on 80 % of its cross-correlations (beyond the 0.7 fraction) is
    flagged whole, one at 50 % is not; likewise an integration. (The step runs with the
    extension step, here given a threshold nothing reaches.)"""
    vis, ant1, ant2, *_ = _synthetic_chunk(7)
    cross = np.flatnonzero(ant1 != ant2)
    ingest = np.zeros(vis.shape, bool)
    ingest[:, cross[: int(0.8 * cross.size)], 20] = True
    ingest[:, cross[: int(0.5 * cross.size)], 25] = True
    ingest[11, cross[: int(0.8 * cross.size)]] = True
    flags, _, _, _, _ = _alone(7, ingest=ingest, extension_sigma=1e9,
                               mostly_flagged_fraction=0.7)
    assert flags[:, :, 20].all() and flags[11].all()
    others = np.arange(flags.shape[0]) != 11
    assert not flags[others][:, cross[int(0.5 * cross.size):], 25].any()
