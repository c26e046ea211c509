"""Flagging steps 1-5 on one subband chunk: data flags (zeros and non-finite values,
autocorrelations, an amplitude clip), array-wide outliers and bad antennas (see the package
docstring). Also the layout the RFI detection works on: the cross-correlations' amplitudes in
blocks of ``BLOCK_BASELINES`` baselines.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

from contimg_dask.ops.flagging.parameters import FlagParameters
from contimg_dask.ops.order_statistics import (
    MAD_TO_SIGMA,
    MEDIAN_SAMPLE,
    lane_medians,
    median_sampled,
    network_rows,
    sorting_network,
)

BLOCK_BASELINES = 8  # cross-correlations per block of the fused kernels

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")


# --- steps 1-3: data flags --------------------------------------------------------------

@_jit
def _amplitude(v: complex) -> np.float32:
    """|V| in float32, computed in float64 (no overflow)."""
    re, im = float(v.real), float(v.imag)
    return np.float32(math.sqrt(re * re + im * im))


@_jit
def _flag_data(vis: NDArray[np.complex64], out: NDArray[np.bool_], autos: NDArray[np.bool_],
               zeros: bool, autocorrelations: bool, clip: float) -> None:
    """Zeros and non-finite values, autocorrelations, and amplitudes above ``clip`` (cross-
    correlations only: autocorrelations carry the system power), into ``out``."""
    n_t, n_b = vis.shape[:2]
    clip_squared = clip * clip
    for t in range(n_t):
        for b in range(n_b):
            if autocorrelations and autos[b]:
                out[t, b] = True
                continue
            row, flags = vis[t, b].ravel(), out[t, b].ravel()
            if zeros:
                for i in range(row.size):
                    re, im = row[i].real, row[i].imag
                    flags[i] |= (re == 0 and im == 0) or not (np.isfinite(re)
                                                              and np.isfinite(im))
            if np.isfinite(clip) and not autos[b]:
                for i in range(row.size):
                    re, im = float(row[i].real), float(row[i].imag)
                    flags[i] |= re * re + im * im > clip_squared


# --- step 4: array-wide outliers --------------------------------------------------------

@_jit
def _array_ratio(amplitude: NDArray[np.float32], out: NDArray[np.bool_],
                 blocks: NDArray[np.int64], network: NDArray[np.int64]
                 ) -> NDArray[np.float32]:
    """Per (time, channel, pol): median over cross-correlations of |V| relative to the
    baseline's median |V| over time, unflagged samples only (NaN where none).
    ``amplitude``: (block, time, frequency, plane) of the baselines ``blocks``;
    ``network`` sorts the time samples (``sorting_network(n_time)``)."""
    n_blocks, n_t, n_f, n_q = amplitude.shape
    n_p = out.shape[3]
    reference = np.empty((n_blocks, n_f, n_q), np.float32)
    lines = np.empty((network_rows(network, n_t), n_f, n_q), np.float32)
    count = np.empty((n_f, n_q), np.int64)
    for k in range(n_blocks):
        count[:] = 0
        lines[n_t:] = np.inf
        for t in range(n_t):
            amp, line = amplitude[k, t], lines[t]
            for j in range(blocks.shape[1]):
                b = blocks[k, j]
                flags = out[t, max(b, 0)]
                for f in range(n_f):
                    for p in range(n_p):
                        q = j * n_p + p
                        valid = b >= 0 and not flags[f, p] and np.isfinite(amp[f, q])
                        line[f, q] = amp[f, q] if valid else np.inf
                        count[f, q] += valid
        lane_medians(lines.reshape(lines.shape[0], n_f * n_q), count.ravel(), network,
                      reference[k].ravel())
    ratio = np.empty((n_t, n_f, n_p), np.float32)
    values = np.empty((n_f, n_p, blocks.size), np.float32)
    filled = np.empty((n_f, n_p), np.int64)
    work = np.empty(blocks.size, np.float32)
    sample = np.empty(MEDIAN_SAMPLE, np.float32)
    for t in range(n_t):
        filled[:] = 0
        for k in range(n_blocks):
            amp, ref = amplitude[k, t], reference[k]
            for j in range(blocks.shape[1]):
                b = blocks[k, j]
                if b < 0:
                    continue
                flags = out[t, b]
                for f in range(n_f):
                    for p in range(n_p):
                        if not flags[f, p]:
                            r = amp[f, j * n_p + p] / ref[f, j * n_p + p]
                            if np.isfinite(r):
                                values[f, p, filled[f, p]] = r
                                filled[f, p] += 1
        for f in range(n_f):
            for p in range(n_p):
                ratio[t, f, p] = median_sampled(values[f, p], filled[f, p], work, sample)
    return ratio


def array_wide_outliers(amplitude: NDArray[np.float32], flags: NDArray[np.bool_],
                        cross: NDArray[np.int64], threshold_sigma: float) -> NDArray[np.bool_]:
    """(time, channel, pol) cells where the whole array sees excess power: the median over
    baselines of |V| relative to each baseline's own median over time, robustly compared
    across cells. Broadband bursts and persistent narrowband emitters light every baseline
    at once, while sky structure differs from baseline to baseline, so this catches them even
    where a per-baseline background is biased (e.g. bursts at the edge of the block).
    ``amplitude``: the cross-correlations ``cross`` in blocks (``block_amplitudes``)."""
    ratio = _array_ratio(amplitude, flags, baseline_blocks(cross),
                         sorting_network(amplitude.shape[1]))
    valid = np.isfinite(ratio)
    if valid.sum() < 3:
        return np.zeros(ratio.shape, bool)
    centre = np.median(ratio[valid])
    spread = MAD_TO_SIGMA * np.median(np.abs(ratio[valid] - centre))
    if spread == 0:
        return np.zeros(ratio.shape, bool)
    return valid & (ratio > centre + threshold_sigma * spread)


@_jit
def _flag_cells(out: NDArray[np.bool_], cells: NDArray[np.bool_],
                cross: NDArray[np.int64]) -> None:
    """Flag (time, channel, pol) ``cells`` on every cross-correlation."""
    n_t, _, n_f, n_p = out.shape
    for t in range(n_t):
        for b in cross:
            for f in range(n_f):
                for p in range(n_p):
                    out[t, b, f, p] |= cells[t, f, p]


# --- step 5: bad antennas ---------------------------------------------------------------

@_jit
def _channel_scatter(vis: NDArray[np.complex64], out: NDArray[np.bool_],
                     cross: NDArray[np.int64], network: NDArray[np.int64]
                     ) -> NDArray[np.float64]:
    """Per cross-correlation: robust σ (median |ΔV| × 1.4826) of the differences between
    adjacent channels over time and pol, unflagged pairs only, at the quietest channel pair
    (0 where no pair has data). ``network`` sorts time × pol samples (``sorting_network``);
    all channel pairs of a baseline are sorted at once."""
    n_t, _, n_f, n_p = vis.shape
    scatter = np.zeros(cross.size)
    values = np.empty((network_rows(network, n_t * n_p), n_f - 1), np.float32)
    count = np.empty(n_f - 1, np.int64)
    medians = np.empty(n_f - 1, np.float32)
    for i in range(cross.size):
        b = cross[i]
        values[:] = np.inf
        count[:] = 0
        for t in range(n_t):
            row, flags = vis[t, b], out[t, b]
            for p in range(n_p):
                line = values[t * n_p + p]
                for f in range(n_f - 1):
                    if not (flags[f, p] or flags[f + 1, p]):
                        d = _amplitude(row[f + 1, p] - row[f, p])
                        if np.isfinite(d):
                            line[f] = d
                            count[f] += 1
        lane_medians(values, count, network, medians)
        lowest = np.inf
        for f in range(n_f - 1):
            if count[f]:
                lowest = min(lowest, MAD_TO_SIGMA * medians[f])
        scatter[i] = lowest if np.isfinite(lowest) else 0.0
    return scatter


@_jit
def flagged_per_baseline(out: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Number of flagged samples of each baseline (over time, channel and pol)."""
    n_t, n_b, n_f, n_p = out.shape
    counts = np.zeros(n_b, np.int64)
    for t in range(n_t):
        for b in range(n_b):
            for f in range(n_f):
                for p in range(n_p):
                    counts[b] += out[t, b, f, p]
    return counts


def bad_antenna_mask(vis: NDArray[np.complex64], flags: NDArray[np.bool_],
                     ant1: NDArray[np.int64], ant2: NDArray[np.int64],
                     params: FlagParameters) -> NDArray[np.bool_]:
    """Baselines (bool per baseline) of bad antennas: autocorrelation power an outlier among
    the antennas (log power beyond ``bad_antenna_power_sigma`` robust σ of the array's spread,
    which uncalibrated gains widen); cross-correlation scatter (robust σ of channel-to-channel
    differences, quietest channel pair: persistent narrowband RFI inflates every baseline's
    scatter, a broken antenna every pair of its baselines) above ``bad_antenna_noise_factor``
    times the array's median on *every* baseline of the antenna (sky structure inflates the
    scatter of long baselines, but a broken antenna spoils even its shortest); or data already
    flagged beyond ``bad_antenna_flagged_fraction``."""
    antennas = np.unique(np.concatenate([ant1, ant2]))
    bad = set()
    cross = ant1 != ant2
    if params.bad_antenna_noise_factor is not None and cross.any() and vis.shape[2] > 1:
        scatter = np.zeros(ant1.size)
        scatter[cross] = _channel_scatter(vis, flags, np.flatnonzero(cross),
                                          sorting_network(vis.shape[0] * vis.shape[3]))
        reference = np.median(scatter[cross])
        for a in antennas:
            rows = cross & ((ant1 == a) | (ant2 == a))
            if rows.any() and scatter[rows].min() > params.bad_antenna_noise_factor * reference:
                bad.add(int(a))
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
    flagged = flagged_per_baseline(flags)
    per_baseline = flags[:, 0].size
    for a in antennas:
        rows = (ant1 == a) | (ant2 == a)
        if flagged[rows].sum() / (rows.sum() * per_baseline) > params.bad_antenna_flagged_fraction:
            bad.add(int(a))
    return np.isin(ant1, list(bad)) | np.isin(ant2, list(bad))


# --- cross-correlations in blocks, for step 4 and the RFI detection -------------------


@_jit
def _block_amplitudes(vis: NDArray[np.complex64], blocks: NDArray[np.int64],
                      amp: NDArray[np.float32]) -> None:
    """|V| of the blocks' baselines into ``amp`` (block, time, frequency, baseline × pol);
    padding lanes (baseline -1) get 0."""
    n_t, _, n_f, n_p = vis.shape
    for k in range(blocks.shape[0]):
        for t in range(n_t):
            out = amp[k, t]
            for j in range(blocks.shape[1]):
                b = blocks[k, j]
                row = vis[t, max(b, 0)]
                for f in range(n_f):
                    for p in range(n_p):
                        out[f, j * n_p + p] = _amplitude(row[f, p]) if b >= 0 else 0.0


def block_amplitudes(vis: NDArray[np.complex64], cross: NDArray[np.int64]
                     ) -> NDArray[np.float32]:
    """|V| of the cross-correlations ``cross`` in blocks of ``BLOCK_BASELINES``: (block,
    time, frequency, baseline × pol), float32 (half the size of the visibilities)."""
    blocks = baseline_blocks(cross)
    n_t, _, n_f, n_p = vis.shape
    amp = np.empty((blocks.shape[0], n_t, n_f, blocks.shape[1] * n_p), np.float32)
    _block_amplitudes(vis, blocks, amp)
    return amp


def baseline_blocks(cross: NDArray[np.int64], size: int = BLOCK_BASELINES
                    ) -> NDArray[np.int64]:
    """Cross-correlation indices in blocks of ``size`` (block, baseline), padded with -1."""
    padded = np.full(-(-cross.size // size) * size, -1, np.int64)
    padded[:cross.size] = cross
    return padded.reshape(-1, size)


# --- steps 1-5 -------------------------------------------------------------------------


def screen_subband(vis: NDArray[np.complex64], flags: NDArray[np.bool_],
                   ant1: NDArray[np.int64], ant2: NDArray[np.int64], params: FlagParameters
                   ) -> tuple[NDArray[np.int64], NDArray[np.float32]] | None:
    """Steps 1-5 into ``flags``. Returns the cross-correlations (indices) and their
    amplitudes in blocks (``block_amplitudes``) for RFI detection, or None if nothing is
    left unflagged."""
    autos = ant1 == ant2
    clip = np.inf if params.amplitude_clip_jy is None else params.amplitude_clip_jy
    _flag_data(vis, flags, autos, params.zeros, params.autocorrelations, clip)
    cross = np.flatnonzero(~autos)
    if cross.size == 0 or _all_flagged(flags, cross):
        return None
    amplitude = block_amplitudes(vis, cross)
    if params.array_outlier_sigma is not None:
        cells = array_wide_outliers(amplitude, flags, cross, params.array_outlier_sigma)
        _flag_cells(flags, cells, cross)
    flags[:, bad_antenna_mask(vis, flags, ant1, ant2, params)] = True
    return None if _all_flagged(flags, cross) else (cross, amplitude)


@_jit
def _all_flagged(out: NDArray[np.bool_], cross: NDArray[np.int64]) -> bool:
    """Whether every sample of the cross-correlations is flagged."""
    n_t, _, n_f, n_p = out.shape
    for t in range(n_t):
        for b in cross:
            for f in range(n_f):
                for p in range(n_p):
                    if not out[t, b, f, p]:
                        return False
    return True
