"""RFI and data flagging on one subband chunk (plain NumPy/Numba on in-memory arrays).

Arrays are shaped (time, baseline, frequency, polarization). The steps, in the order DSA-110
runs them, each switchable by configuration:

1. zeros and non-finite values;
2. autocorrelations (flagged for imaging; the data stay in the store);
3. an amplitude clip;
4. bad antennas: autocorrelation power far from the array's median, or already mostly
   flagged;
5. RFI seen by the whole array at once (broadband bursts, persistent narrowband emitters):
   time-frequency cells where the median over baselines of the normalised amplitude is an
   outlier;
6. RFI: SumThreshold (Offringa et al. 2010, as AOFlagger) in the time-frequency plane of every
   baseline and polarization, on amplitude residuals from a median-smoothed background,
   iterated with the background re-estimated without what was flagged;
7. a robust MAD sigma clip on the same residuals (with only 24 integrations, SumThreshold
   along time is weak: this catches the rest);
8. extension: neighbours of flagged samples whose residual exceeds a lower threshold
   (residuals are one-sided throughout: interference adds power), and
   whole channels or integrations that are mostly flagged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter1d

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class FlagParameters:
    """Flagging parameters; their values come from the ``flagging`` configuration section
    (``config/pipeline.yaml`` documents each)."""

    zeros: bool
    autocorrelations: bool
    amplitude_clip_jy: float | None
    bad_antenna_power_sigma: float | None
    bad_antenna_noise_factor: float | None
    bad_antenna_flagged_fraction: float
    sumthreshold: bool
    sumthreshold_sigma: float
    sumthreshold_rho: float
    sumthreshold_windows: tuple[int, ...]
    iterations: int
    background_window: tuple[int, int]  # (time, frequency)
    mad_clip_sigma: float | None
    extension_sigma: float | None
    mostly_flagged_fraction: float


def nan_median(values: NDArray[np.floating], axis: int | tuple[int, ...]) -> NDArray:
    """Median ignoring NaNs along ``axis`` (kept as length-1 dimensions), vectorised: sort,
    NaNs last, and pick the middle of the finite values (NaN where there are none).
    ``numpy.nanmedian`` loops in Python over the other axes: 10x slower here."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    moved = np.moveaxis(values, axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(*moved.shape[:moved.ndim - len(axes)], -1)
    ordered = np.sort(flat, axis=-1)
    count = np.isfinite(flat).sum(axis=-1, keepdims=True)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0), axis=-1)
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0), axis=-1)
    median = np.where(count > 0, 0.5 * (low + high), np.nan)
    shape = list(values.shape)
    for a in axes:
        shape[a] = 1
    return median.reshape(shape)


def robust_sigma(values: NDArray[np.floating]) -> float:
    """Gaussian-equivalent standard deviation from the median absolute deviation."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def amplitude_residual(amp: NDArray[np.float32], flags: NDArray[np.bool_],
                       window: tuple[int, int]) -> NDArray[np.float32]:
    """|V| minus a smooth background over (time, frequency), per baseline and polarization.

    The background is a masked (normalised) Gaussian smoothing, as AOFlagger's: flagged
    samples carry no weight, and a plane entirely flagged gets no background. ``window`` is
    the full width (integrations, channels) the Gaussian's 2σ spans.
    """
    weight = (~flags).astype(np.float32)
    weighted = np.where(flags, 0.0, amp).astype(np.float32)
    sigmas = (window[0] / 4.0, window[1] / 4.0)
    for axis, width in ((0, sigmas[0]), (2, sigmas[1])):
        weighted = gaussian_filter1d(weighted, width, axis=axis, mode="nearest")
        weight = gaussian_filter1d(weight, width, axis=axis, mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        background = np.where(weight > 1e-3, weighted / weight, 0.0)
    return (amp - background).astype(np.float32)


@numba.njit(nogil=True, cache=True)
def _sumthreshold_line(values: NDArray[np.float32], before: NDArray[np.bool_],
                       out: NDArray[np.bool_], window: int, threshold: float) -> None:
    """One SumThreshold pass along a line (1-D views, no copies): where the mean of a
    window exceeds ``threshold``, flag the whole window in ``out``. Values flagged before
    this pass (``before``) count as the threshold, as in AOFlagger. One-sided: on amplitude
    residuals interference is an excess, while deficits come from backgrounds biased by a
    neighbour's interference."""
    n = values.shape[0]
    if window > n:
        return
    total = 0.0
    for i in range(window):
        total += threshold if before[i] else values[i]
    for start in range(n - window + 1):
        if start > 0:
            old, new = start - 1, start + window - 1
            total -= threshold if before[old] else values[old]
            total += threshold if before[new] else values[new]
        if total > threshold * window:
            for i in range(start, start + window):
                out[i] = True


@numba.njit(nogil=True, cache=True)
def _sumthreshold_planes(residual: NDArray[np.float32], flags: NDArray[np.bool_],
                         thresholds: NDArray[np.float64], windows: NDArray[np.int64]
                         ) -> NDArray[np.bool_]:
    """SumThreshold in both directions of every (time, frequency) plane.

    ``residual``/``flags`` are (time, baseline, frequency, pol), ``thresholds`` (window,
    baseline, pol); returns new flags (the old ones included). Each window pass sees the
    flags as they were before it.
    """
    n_t, n_b, n_f, n_p = residual.shape
    out = flags.copy()
    before = np.empty((n_t, n_f), dtype=np.bool_)
    for b in range(n_b):
        for p in range(n_p):
            for k in range(windows.shape[0]):
                window, threshold = windows[k], thresholds[k, b, p]
                before[:, :] = out[:, b, :, p]
                for t in range(n_t):  # along frequency
                    _sumthreshold_line(residual[t, b, :, p], before[t, :], out[t, b, :, p],
                                       window, threshold)
                for f in range(n_f):  # along time
                    _sumthreshold_line(residual[:, b, f, p], before[:, f], out[:, b, f, p],
                                       window, threshold)
    return out


def sumthreshold(residual: NDArray[np.float32], flags: NDArray[np.bool_],
                 sigma: NDArray[np.float64], params: FlagParameters) -> NDArray[np.bool_]:
    """SumThreshold with thresholds χ_M = χ_1 / ρ^log2(M), χ_1 = ``sumthreshold_sigma`` σ,
    σ per (baseline, pol) plane (shape (baseline, pol))."""
    windows = np.array(params.sumthreshold_windows, dtype=np.int64)
    scale = params.sumthreshold_sigma / params.sumthreshold_rho ** np.log2(
        windows.astype(np.float64))
    thresholds = scale[:, None, None] * np.asarray(sigma, np.float64)[None]
    return _sumthreshold_planes(np.ascontiguousarray(residual), flags, thresholds, windows)


def plane_sigma(residual: NDArray[np.float32], flags: NDArray[np.bool_]) -> NDArray:
    """Robust σ of the unflagged residuals of every (baseline, pol) plane, never below the
    chunk's global robust σ (the thermal noise: sky structure only adds to it)."""
    masked = np.where(flags, np.nan, residual)
    centre = nan_median(masked, axis=(0, 2))
    sigma = MAD_TO_SIGMA * nan_median(np.abs(masked - centre), axis=(0, 2))[0, :, 0, :]
    floor = robust_sigma(residual[~flags])
    return np.where(np.isfinite(sigma), np.maximum(sigma, floor), floor)


def array_wide_outliers(amp: NDArray[np.float32], flags: NDArray[np.bool_],
                        threshold_sigma: float) -> NDArray[np.bool_]:
    """(time, channel, pol) cells where the whole array sees excess power: the median over
    baselines of |V| relative to each baseline's own median over time, robustly compared
    across cells. Broadband bursts and persistent narrowband emitters light every baseline
    at once, while sky structure differs from baseline to baseline, so this catches them even
    where a per-baseline background is biased (e.g. bursts at the edge of the block)."""
    masked = np.where(flags, np.nan, amp)
    reference = nan_median(masked, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = nan_median(masked / reference, axis=1)[:, 0]  # (time, channel, pol)
    valid = np.isfinite(ratio)
    if valid.sum() < 3:
        return np.zeros(ratio.shape, bool)
    centre = np.median(ratio[valid])
    spread = MAD_TO_SIGMA * np.median(np.abs(ratio[valid] - centre))
    if spread == 0:
        return np.zeros(ratio.shape, bool)
    return valid & (ratio > centre + threshold_sigma * spread)


def bad_antenna_mask(vis: NDArray[np.complex64], flags: NDArray[np.bool_],
                     ant1: NDArray[np.int64], ant2: NDArray[np.int64],
                     params: FlagParameters) -> NDArray[np.bool_]:
    """Baselines (bool per baseline) of bad antennas: autocorrelation power an outlier among
    the antennas (log power beyond ``bad_antenna_power_sigma`` robust σ of the array's spread,
    which uncalibrated gains widen); cross-correlation scatter
    (robust σ of channel-to-channel differences, quietest channel pair) above
    ``bad_antenna_noise_factor`` times the
    array's median on *every* baseline of the antenna (sky structure inflates the scatter of
    long baselines, but a broken antenna spoils even its shortest); or data already flagged
    beyond ``bad_antenna_flagged_fraction``."""
    antennas = np.unique(np.concatenate([ant1, ant2]))
    bad = set()
    cross = ant1 != ant2
    if params.bad_antenna_noise_factor is not None and cross.any() and vis.shape[2] > 1:
        diff = np.abs(np.diff(vis, axis=2))
        diff[flags[:, :, 1:] | flags[:, :, :-1]] = np.nan  # e.g. RFI found array-wide
        # Per baseline and pair of adjacent channels, then the quietest pair: a channel
        # with persistent narrowband RFI inflates every baseline's scatter, a broken
        # antenna inflates every pair of its baselines.
        per_pair = MAD_TO_SIGMA * nan_median(diff, axis=(0, 3))[0, :, :, 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN baselines
            scatter = np.nanmin(per_pair, axis=1)
        scatter = np.where(np.isfinite(scatter), scatter, 0.0)
        per_antenna = {int(a): float(np.min(scatter[cross & ((ant1 == a) | (ant2 == a))]))
                       for a in antennas if (cross & ((ant1 == a) | (ant2 == a))).any()}
        reference = np.median(scatter[cross])
        bad |= {a for a, s in per_antenna.items()
                if s > params.bad_antenna_noise_factor * reference}
    autos = ant1 == ant2
    if params.bad_antenna_power_sigma is not None and autos.sum() > 2:
        power = {int(ant1[b]): float(np.median(np.abs(vis[:, b])))
                 for b in np.flatnonzero(autos)}
        if min(power.values()) > 0:
            log_power = {a: np.log(p) for a, p in power.items()}
            values = np.array(list(log_power.values()))
            centre = np.median(values)
            spread = MAD_TO_SIGMA * np.median(np.abs(values - centre))
            if spread > 0:
                bad |= {a for a, v in log_power.items()
                        if abs(v - centre) > params.bad_antenna_power_sigma * spread}
    for a in antennas:
        rows = (ant1 == a) | (ant2 == a)
        if flags[:, rows].mean() > params.bad_antenna_flagged_fraction:
            bad.add(int(a))
    return np.isin(ant1, list(bad)) | np.isin(ant2, list(bad))


def flag_subband(vis: NDArray[np.complex64], flags: NDArray[np.bool_],
                 ant1: NDArray[np.int64], ant2: NDArray[np.int64],
                 params: FlagParameters) -> NDArray[np.bool_]:
    """New flags for one subband chunk (existing flags kept). See the module docstring."""
    out = flags.copy()
    amp = np.abs(vis)
    if params.zeros:
        out |= (amp == 0) | ~np.isfinite(vis)
    autos = ant1 == ant2
    if params.autocorrelations:
        out[:, autos] = True
    if params.amplitude_clip_jy is not None:
        clip = amp > params.amplitude_clip_jy
        clip[:, autos] = False  # autocorrelations carry the system power
        out |= clip
    cross = ~autos
    if not cross.any() or out[:, cross].all():
        return out
    if params.mad_clip_sigma is not None:
        cells = array_wide_outliers(amp[:, cross], out[:, cross], params.mad_clip_sigma)
        out[:, cross] |= cells[:, None, :, :]
    out[:, bad_antenna_mask(vis, out, ant1, ant2, params)] = True
    if out[:, cross].all():
        return out
    residual = np.zeros(amp.shape, np.float32)
    sigma = np.ones((amp.shape[1], amp.shape[3]))
    base = out[:, cross].copy()
    found = np.zeros_like(base)
    # Each iteration detects afresh, with what the previous one found masked out of the
    # background and the noise estimate: an early, biased background (e.g. next to a
    # broadband burst) cannot leave false flags behind.
    for _ in range(max(1, params.iterations)):
        masked = base | found
        residual[:, cross] = amplitude_residual(amp[:, cross], masked,
                                                params.background_window)
        if masked.all():
            break
        sigma[cross] = plane_sigma(residual[:, cross], masked)
        if not np.all(np.isfinite(sigma[cross])) or np.any(sigma[cross] == 0):
            return out
        detected = base.copy()
        if params.sumthreshold:
            detected = sumthreshold(residual[:, cross], detected, sigma[cross], params)
        if params.mad_clip_sigma is not None:
            # One-sided: interference adds power.
            detected |= (residual[:, cross]
                         > params.mad_clip_sigma * sigma[cross][None, :, None, :])
        found = detected & ~base
    out[:, cross] = base | found
    if params.extension_sigma is not None:
        out = _extend(out, residual, sigma, cross, params)
    return out


def _extend(flags: NDArray[np.bool_], residual: NDArray[np.float32], sigma: NDArray,
            cross: NDArray[np.bool_], params: FlagParameters) -> NDArray[np.bool_]:
    """Grow flags to time/frequency neighbours above ``extension_sigma``; flag channels and
    integrations that are mostly flagged."""
    out = flags.copy()
    grown = np.zeros_like(flags)
    grown[1:] |= flags[:-1]
    grown[:-1] |= flags[1:]
    grown[:, :, 1:] |= flags[:, :, :-1]
    grown[:, :, :-1] |= flags[:, :, 1:]
    above = residual > params.extension_sigma * sigma[None, :, None, :]
    out |= grown & above & cross[None, :, None, None]
    sub = out[:, cross]
    channel_fraction = sub.mean(axis=(0, 1, 3))
    time_fraction = sub.mean(axis=(1, 2, 3))
    out[:, :, channel_fraction > params.mostly_flagged_fraction, :] = True
    out[time_fraction > params.mostly_flagged_fraction] = True
    return out
