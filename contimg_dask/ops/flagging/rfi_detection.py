"""Flagging steps 6-8, fused, on the amplitudes of one subband chunk's cross-correlations
in blocks (``screening.block_amplitudes``): SumThreshold on residuals from a masked Gaussian
background, a one-sided MAD clip, and extension (see the package docstring).
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np
from numpy.typing import NDArray

from contimg_dask.ops.flagging.parameters import FlagParameters
from contimg_dask.ops.flagging.screening import baseline_blocks
from contimg_dask.ops.order_statistics import (
    MAD_TO_SIGMA,
    MEDIAN_SAMPLE,
    median_sampled,
    order_key,
    pooled_mad,
    pooled_median,
)

GAUSSIAN_TRUNCATE = 4.0  # background kernel radius in σ (as scipy.ndimage)
MIN_BACKGROUND_WEIGHT = 1e-3  # below: no unflagged sample near enough, no background
BASE, FOUND = np.uint8(1), np.uint8(2)  # state bits: flagged before RFI detection, found

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")


# --- steps 6-8: fused RFI detection on blocks of cross-correlations ----------------------

def gaussian_weights(width: int) -> NDArray[np.float32]:
    """Normalised Gaussian kernel whose 2σ spans ``width`` samples (σ = width / 4), truncated
    at ``GAUSSIAN_TRUNCATE`` σ, as ``scipy.ndimage.gaussian_filter1d``."""
    sigma = width / 4.0
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * x**2 / sigma**2)
    return (weights / weights.sum()).astype(np.float32)


@_jit
def _smooth_time(values: NDArray[np.float32], weights: NDArray[np.float32],
                 out: NDArray[np.float32]) -> None:
    """Correlate ``values`` (time, lanes) with ``weights`` along time, nearest-edge mode."""
    n_t, n_l = values.shape
    r = weights.size // 2
    for t in range(n_t):
        row = out[t]
        row[:] = 0.0
        for k in range(weights.size):
            source, w = values[min(max(t + k - r, 0), n_t - 1)], weights[k]
            for i in range(n_l):
                row[i] += w * source[i]


@_jit
def _smooth_frequency(values: NDArray[np.float32], weights: NDArray[np.float32],
                      out: NDArray[np.float32]) -> None:
    """Correlate ``values`` (time, frequency, lanes) with ``weights`` along frequency,
    nearest-edge mode. Away from the edges each tap is one shifted multiply-add over a whole
    integration's (frequency, lanes) row."""
    n_t, n_f, n_l = values.shape
    r = weights.size // 2
    for t in range(n_t):
        source, row = values[t].ravel(), out[t].ravel()
        row[:] = 0.0
        for k in range(weights.size):
            shift, w = k - r, weights[k]
            lo = min(max(0, -shift), n_f)
            hi = max(lo, min(n_f, n_f - shift))
            dst = row[lo * n_l:hi * n_l]
            src = source[(lo + shift) * n_l:(hi + shift) * n_l]
            for i in range(dst.size):
                dst[i] += w * src[i]
            for f in range(n_f):
                if lo <= f < hi:
                    continue
                dst = row[f * n_l:(f + 1) * n_l]
                edge = min(max(f + shift, 0), n_f - 1)
                src = source[edge * n_l:(edge + 1) * n_l]
                for i in range(n_l):
                    dst[i] += w * src[i]


@_jit
def _residual_block(amp: NDArray[np.float32], state: NDArray[np.uint8],
                    weights_t: NDArray[np.float32], weights_f: NDArray[np.float32],
                    residual: NDArray[np.float32], stacked: NDArray[np.float32],
                    smoothed: NDArray[np.float32]) -> None:
    """|V| minus a masked Gaussian background (flagged samples carry no weight; a sample with
    nothing unflagged near it gets no background), as AOFlagger's. ``amp``, ``state``,
    ``residual``: (time, frequency, plane); ``stacked``, ``smoothed``: scratch (time,
    frequency, 2, plane) holding the weighted amplitudes and the weights side by side."""
    n_t, n_f, n_q = amp.shape
    for t in range(n_t):
        for f in range(n_f):
            a, s, v, w = amp[t, f], state[t, f], stacked[t, f, 0], stacked[t, f, 1]
            for q in range(n_q):
                keep = s[q] == 0
                v[q] = a[q] if keep else np.float32(0.0)
                w[q] = np.float32(1.0) if keep else np.float32(0.0)
    _smooth_time(stacked.reshape(n_t, n_f * 2 * n_q), weights_t,
                 smoothed.reshape(n_t, n_f * 2 * n_q))
    _smooth_frequency(smoothed.reshape(n_t, n_f, 2 * n_q), weights_f,
                      stacked.reshape(n_t, n_f, 2 * n_q))
    for t in range(n_t):
        for f in range(n_f):
            a, r, v, w = amp[t, f], residual[t, f], stacked[t, f, 0], stacked[t, f, 1]
            for q in range(n_q):
                background = v[q] / w[q] if w[q] > MIN_BACKGROUND_WEIGHT else np.float32(0.0)
                r[q] = a[q] - background


@_jit
def _plane_sigma(residual: NDArray[np.float32], state: NDArray[np.uint8],
                 changed: NDArray[np.bool_], values: NDArray[np.float32],
                 count: NDArray[np.int64], work: NDArray[np.float32],
                 sample: NDArray[np.float32], sigma: NDArray[np.float64],
                 histogram: NDArray[np.int64]) -> None:
    """Robust σ (MAD) of the unflagged, finite residuals of each plane of a block whose mask
    ``changed`` (NaN for a plane with none; the others keep theirs: same mask, same
    residuals), and the keys of all added to ``histogram`` (for the pooled median).
    ``values`` (plane, sample), ``count`` (plane), ``work`` and ``sample`` are scratch."""
    n_t, n_f, n_q = residual.shape
    flat_r, flat_s = residual.reshape(n_t * n_f, n_q), state.reshape(n_t * n_f, n_q)
    count[:] = 0
    for i in range(n_t * n_f):
        r, s = flat_r[i], flat_s[i]
        for q in range(n_q):
            v = r[q]
            values[q, count[q]] = v
            valid = (s[q] == 0) & np.isfinite(v)
            count[q] += valid
            if valid:
                histogram[order_key(v)] += 1
    for q in range(n_q):
        if not changed[q]:
            continue
        line, m = values[q], count[q]
        centre = median_sampled(line, m, work, sample)
        for i in range(m):
            line[i] = abs(line[i] - centre)
        sigma[q] = MAD_TO_SIGMA * median_sampled(line, m, work, sample)


@_jit
def _residual_pass(amplitude: NDArray[np.float32], state: NDArray[np.uint8],
                   weights_t: NDArray[np.float32],
                   weights_f: NDArray[np.float32], residual: NDArray[np.float32],
                   sigma: NDArray[np.float64], changed: NDArray[np.bool_]
                   ) -> NDArray[np.int64]:
    """Residuals (``residual``, (block, time, frequency, plane)) and plane σ (``sigma``,
    (block, plane)) of the blocks and planes whose mask ``changed``, with flagged samples
    (``state`` non-zero) masked; returns the histogram of the keys of all unflagged
    residuals."""
    n_blocks, n_t, n_f, n_q = residual.shape
    stacked = np.empty((n_t, n_f, 2, n_q), np.float32)
    smoothed = np.empty_like(stacked)
    values = np.empty((n_q, n_t * n_f + 1), np.float32)
    count = np.empty(n_q, np.int64)
    work = np.empty(n_t * n_f + 1, np.float32)
    sample = np.empty(MEDIAN_SAMPLE, np.float32)
    histogram = np.zeros(65536, np.int64)
    for k in range(n_blocks):
        if changed[k].any():  # else same mask, same residuals as before
            _residual_block(amplitude[k], state[k], weights_t, weights_f, residual[k],
                            stacked, smoothed)
        _plane_sigma(residual[k], state[k], changed[k], values, count, work, sample, sigma[k],
                     histogram)
    return histogram


SumThresholdScratch = namedtuple(
    "SumThresholdScratch", "along_time along_frequency flags_frequency limit_t limit_f "
    "total_t total_f last_t last_f")


@_jit
def _sumthreshold_scratch(n_t: int, n_f: int, n_q: int) -> SumThresholdScratch:
    """Work arrays of ``_sumthreshold_block`` for (time, frequency, plane) blocks."""
    lines_t, lines_f = n_f * n_q, n_t * n_q
    return SumThresholdScratch(
        np.empty((n_t, n_f, n_q)), np.empty((n_f, n_t, n_q)),
        np.empty((n_f, n_t, n_q), np.bool_), np.empty(lines_t), np.empty(lines_f),
        np.empty(lines_t), np.empty(lines_f), np.empty(lines_t, np.int64),
        np.empty(lines_f, np.int64))


@_jit
def _window_sums(effective: NDArray[np.float64], flags: NDArray[np.bool_],
                 limit: NDArray[np.float64], window: int, total: NDArray[np.float64],
                 last: NDArray[np.int64]) -> None:
    """SumThreshold along axis 0 of (position, line) arrays, all lines at once: where the sum
    of ``window`` consecutive ``effective`` values exceeds ``limit[line]``, set ``flags``.
    ``total`` and ``last`` (per line) are scratch: running sums, last position to flag."""
    n, n_l = effective.shape
    if window > n:
        return
    total[:] = 0.0
    last[:] = -1
    for s in range(window):
        e = effective[s]
        for i in range(n_l):
            total[i] += e[i]
    for s in range(n):
        if s <= n - window:
            if s > 0:
                old, new = effective[s - 1], effective[s + window - 1]
                for i in range(n_l):
                    total[i] += new[i] - old[i]
            for i in range(n_l):
                last[i] = s + window - 1 if total[i] > limit[i] else last[i]
        row = flags[s]
        for i in range(n_l):
            row[i] |= s <= last[i]


@_jit
def _sumthreshold_block(residual: NDArray[np.float32], flags: NDArray[np.bool_],
                        thresholds: NDArray[np.float64], windows: NDArray[np.int64],
                        scratch: SumThresholdScratch) -> None:
    """SumThreshold in both directions of every (time, frequency) plane of a block: where the
    mean of a window of ``windows[k]`` samples exceeds ``thresholds[k, plane]``, flag the
    window. Samples flagged before a window size's pass count as its threshold (as in
    AOFlagger); both directions of a pass see the flags as they were before it. One-sided: on
    amplitude residuals interference is an excess, while deficits come from backgrounds
    biased by a neighbour's interference. The frequency direction runs on a transposed copy
    (frequency, time, plane), so that both run on many contiguous lines at once."""
    n_t, n_f, n_q = residual.shape
    along_t, along_f = scratch.along_time, scratch.along_frequency
    flags_f = scratch.flags_frequency
    for k in range(windows.size):
        window, thr = windows[k], thresholds[k]
        if window == 1:  # a single sample: no sums, both directions alike
            for t in range(n_t):
                for f in range(n_f):
                    r, fl = residual[t, f], flags[t, f]
                    for q in range(n_q):
                        fl[q] |= r[q] > thr[q]
            continue
        for t in range(n_t):
            for f in range(n_f):
                r, fl, e, e_f = residual[t, f], flags[t, f], along_t[t, f], along_f[f, t]
                for q in range(n_q):
                    value = thr[q] if fl[q] else r[q]
                    e[q] = value
                    e_f[q] = value
        for f in range(n_f):
            for q in range(n_q):
                scratch.limit_t[f * n_q + q] = thr[q] * window
        for t in range(n_t):
            for q in range(n_q):
                scratch.limit_f[t * n_q + q] = thr[q] * window
        flags_f[:] = False
        _window_sums(along_t.reshape(n_t, n_f * n_q), flags.reshape(n_t, n_f * n_q),
                     scratch.limit_t, window, scratch.total_t, scratch.last_t)
        _window_sums(along_f.reshape(n_f, n_t * n_q), flags_f.reshape(n_f, n_t * n_q),
                     scratch.limit_f, window, scratch.total_f, scratch.last_f)
        for t in range(n_t):
            for f in range(n_f):
                fl, fl_f = flags[t, f], flags_f[f, t]
                for q in range(n_q):
                    fl[q] |= fl_f[q]


@_jit
def _or_shifted(target: NDArray[np.bool_], source: NDArray[np.bool_]) -> None:
    """``target |= source`` (equal-length contiguous views)."""
    for i in range(target.size):
        target[i] |= source[i]


@_jit
def _extend_block(residual: NDArray[np.float32], flags: NDArray[np.bool_],
                  level: NDArray[np.float64], grown: NDArray[np.bool_]) -> None:
    """Flag time/frequency neighbours of flagged samples whose residual exceeds ``level``
    (per plane); one step, from the flags as they were. Each neighbour direction is one
    shifted OR over contiguous rows."""
    n_t, n_f, n_q = residual.shape
    grown[:] = False
    for t in range(n_t):
        row = grown[t].ravel()
        if t > 0:
            _or_shifted(row, flags[t - 1].ravel())
        if t < n_t - 1:
            _or_shifted(row, flags[t + 1].ravel())
        here = flags[t].ravel()
        _or_shifted(row[n_q:], here[:-n_q])
        _or_shifted(row[:-n_q], here[n_q:])
    for t in range(n_t):
        for f in range(n_f):
            r, g, fl = residual[t, f], grown[t, f], flags[t, f]
            for q in range(n_q):
                fl[q] |= g[q] & (r[q] > level[q])


@_jit
def _unflagged_max(residual: NDArray[np.float32], flags: NDArray[np.bool_],
                   out: NDArray[np.float64]) -> None:
    """Largest unflagged residual of each plane of a block (-inf if none)."""
    n_t, n_f, n_q = residual.shape
    out[:] = -np.inf
    for t in range(n_t):
        for f in range(n_f):
            r, fl = residual[t, f], flags[t, f]
            for q in range(n_q):
                out[q] = max(out[q], -np.inf if fl[q] else r[q])


@_jit
def _detect_pass(residual: NDArray[np.float32], state: NDArray[np.uint8],
                 sigma: NDArray[np.float64], thresholds: NDArray[np.float64],
                 windows: NDArray[np.int64], clip_sigma: float, extension_sigma: float,
                 changed: NDArray[np.bool_]) -> None:
    """Detection on every block, from the samples flagged before it (``BASE``): SumThreshold
    (thresholds ``thresholds[window] × σ``; no windows: none), a one-sided clip at
    ``clip_sigma`` σ and, if ``extension_sigma`` is finite, the extension. Sets ``FOUND``
    in ``state`` for what is newly flagged, clears it elsewhere, and marks in ``changed``
    (block, plane) the planes where that differs from before. A window size whose threshold
    no unflagged residual of the block exceeds is skipped (no window mean can exceed it)."""
    n_blocks, n_t, n_f, n_q = residual.shape
    flags = np.empty((n_t, n_f, n_q), np.bool_)
    grown = np.empty_like(flags)
    scratch = _sumthreshold_scratch(n_t, n_f, n_q)
    scaled = np.empty((windows.size, n_q))
    clip, extension, peak = np.empty(n_q), np.empty(n_q), np.empty(n_q)
    active = np.empty(windows.size, np.int64)
    for k in range(n_blocks):
        for q in range(n_q):
            for w in range(windows.size):
                scaled[w, q] = thresholds[w] * sigma[k, q]
            clip[q] = clip_sigma * sigma[k, q]
            extension[q] = extension_sigma * sigma[k, q]
        block_state, block_residual = state[k], residual[k]
        flat_state, flat_flags = block_state.ravel(), flags.ravel()
        for i in range(flat_flags.size):
            flat_flags[i] = (flat_state[i] & BASE) != 0
        _unflagged_max(block_residual, flags, peak)
        n_active = 0
        for w in range(windows.size):
            if np.any(peak > scaled[w]):
                active[n_active] = w
                n_active += 1
        _sumthreshold_block(block_residual, flags, scaled[active[:n_active]],
                            windows[active[:n_active]], scratch)
        for t in range(n_t):
            for f in range(n_f):
                r, fl = block_residual[t, f], flags[t, f]
                for q in range(n_q):
                    fl[q] |= r[q] > clip[q]
        if np.isfinite(extension_sigma):
            _extend_block(block_residual, flags, extension, grown)
        lanes = changed[k]
        lanes[:] = False
        for t in range(n_t):
            for f in range(n_f):
                st, fl = block_state[t, f], flags[t, f]
                for q in range(n_q):
                    old = st[q]
                    new = (old & BASE) | (FOUND * (fl[q] and not old & BASE))
                    st[q] = new
                    lanes[q] |= new != old


@_jit
def _exchange_state(out: NDArray[np.bool_], blocks: NDArray[np.int64],
                    state: NDArray[np.uint8], gather: bool) -> None:
    """Between the chunk's flags ``out`` and the blocks' ``state``: with ``gather``, set
    ``state`` to ``BASE`` where a block's sample is flagged already (and on padding lanes),
    else 0; without, flag in ``out`` what ``state`` marks ``FOUND``."""
    _, n_t, n_f, _ = state.shape
    n_p = out.shape[3]
    for k in range(blocks.shape[0]):
        for t in range(n_t):
            for j in range(blocks.shape[1]):
                b = blocks[k, j]
                for f in range(n_f):
                    for p in range(n_p):
                        q = j * n_p + p
                        if gather:
                            state[k, t, f, q] = BASE if b < 0 or out[t, b, f, p] else 0
                        elif b >= 0:
                            out[t, b, f, p] |= (state[k, t, f, q] & FOUND) != 0


def sumthreshold_scale(params: FlagParameters) -> tuple[NDArray[np.int64], NDArray]:
    """Window sizes and their thresholds in units of σ: χ_M = χ_1 / ρ^log2(M), χ_1 =
    ``sumthreshold_sigma`` (no windows if SumThreshold is off)."""
    if not params.sumthreshold:
        return np.zeros(0, np.int64), np.zeros(0)
    windows = np.array(params.sumthreshold_windows, dtype=np.int64)
    scale = params.sumthreshold_sigma / params.sumthreshold_rho ** np.log2(
        windows.astype(np.float64))
    return windows, scale


def detect_rfi(amplitude: NDArray[np.float32], out: NDArray[np.bool_],
               cross: NDArray[np.int64], params: FlagParameters) -> None:
    """Steps 6-8 into ``out``, from the amplitudes of the cross-correlations ``cross`` in
    blocks (``block_amplitudes``).

    Each iteration detects afresh from the flags as they were before it, with what the
    previous one found masked out of the background and the noise estimate: an early, biased
    background (e.g. next to a broadband burst) cannot leave false flags behind. σ per plane
    is never below the chunk's pooled robust σ (the thermal noise: sky structure only adds to
    it). If that σ is 0 or undefined, nothing is added.
    """
    blocks = baseline_blocks(cross)
    state = np.empty(amplitude.shape, np.uint8)
    _exchange_state(out, blocks, state, True)
    residual = np.empty(amplitude.shape, np.float32)
    plane_sigma = np.empty((blocks.shape[0], amplitude.shape[3]))
    changed = np.ones(plane_sigma.shape, np.bool_)
    weights_t = gaussian_weights(params.background_window[0])
    weights_f = gaussian_weights(params.background_window[1])
    windows, scale = sumthreshold_scale(params)
    clip_sigma = np.inf if params.mad_clip_sigma is None else params.mad_clip_sigma
    iterations = max(1, params.iterations)
    for i in range(iterations):
        if changed.any():  # else residuals and σ as in the previous iteration
            histogram = _residual_pass(amplitude, state, weights_t, weights_f, residual,
                                       plane_sigma, changed)
            centre = pooled_median(residual, state, 0.0, False, histogram)
            floor = MAD_TO_SIGMA * pooled_mad(residual, state, centre, histogram)
            if not np.isfinite(floor):
                return
            sigma = np.where(plane_sigma >= floor, plane_sigma, floor)  # NaN: the floor
            if np.any(sigma == 0):
                return
        last = i == iterations - 1
        extension = (params.extension_sigma if last and params.extension_sigma is not None
                     else np.inf)
        _detect_pass(residual, state, sigma, scale, windows, clip_sigma, extension, changed)
    _exchange_state(out, blocks, state, False)
    if params.extension_sigma is not None:
        flag_mostly_flagged(out, cross, params.mostly_flagged_fraction)


@_jit
def _flagged_per_time_and_channel(out: NDArray[np.bool_], cross: NDArray[np.int64]
                                  ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Flagged samples of the cross-correlations per integration and per channel."""
    n_t, _, n_f, n_p = out.shape
    per_time = np.zeros(n_t, np.int64)
    per_channel = np.zeros(n_f, np.int64)
    for t in range(n_t):
        for b in cross:
            for f in range(n_f):
                for p in range(n_p):
                    if out[t, b, f, p]:
                        per_time[t] += 1
                        per_channel[f] += 1
    return per_time, per_channel


def flagged_per_channel(flags: NDArray[np.bool_], cross: NDArray[np.bool_]
                        ) -> NDArray[np.int64]:
    """Number of flagged samples of the cross-correlations (``cross``: bool per baseline) per
    channel (over time, baseline and pol)."""
    return _flagged_per_time_and_channel(flags, np.flatnonzero(cross))[1]


def flag_mostly_flagged(out: NDArray[np.bool_], cross: NDArray[np.int64],
                        fraction: float) -> None:
    """Flag whole channels and integrations whose cross-correlations are flagged beyond
    ``fraction``."""
    n_t, _, n_f, n_p = out.shape
    per_time, per_channel = _flagged_per_time_and_channel(out, cross)
    out[:, :, per_channel / (n_t * cross.size * n_p) > fraction, :] = True
    out[per_time / (n_f * cross.size * n_p) > fraction] = True
