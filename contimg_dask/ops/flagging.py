"""RFI and data flagging on one subband chunk (Numba kernels on in-memory arrays).

Arrays are shaped (time, baseline, frequency, polarization). The steps, in the order DSA-110
runs them, each switchable by configuration:

1. zeros and non-finite values;
2. autocorrelations (flagged for imaging; the data stay in the store);
3. an amplitude clip;
4. RFI seen by the whole array at once (broadband bursts, persistent narrowband emitters):
   time-frequency cells where the median over baselines of the normalised amplitude is an
   outlier;
5. bad antennas: autocorrelation power far from the array's median, noisy on every baseline,
   or already mostly flagged;
6. RFI: SumThreshold (Offringa et al. 2010, as AOFlagger) in the time-frequency plane of every
   baseline and polarization, on amplitude residuals from a masked Gaussian background,
   iterated with the background re-estimated without what was flagged;
7. a robust MAD sigma clip on the same residuals (with only 24 integrations, SumThreshold
   along time is weak: this catches the rest);
8. extension: neighbours of flagged samples whose residual exceeds a lower threshold
   (residuals are one-sided throughout: interference adds power), and
   whole channels or integrations that are mostly flagged.

Implementation: steps 6-8 run fused, one pass over the chunk per stage, on blocks of
``BLOCK_BASELINES`` cross-correlations whose (baseline, polarization) planes are the
innermost axis of a (time, frequency, plane) array, so that every operation on a plane runs
on all planes of the block at once (SIMD). The only chunk-sized temporaries are the residuals
(float32, half the size of the visibilities) and one byte of state per visibility.
"""

from __future__ import annotations

import functools
import math
from collections import namedtuple
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

MAD_TO_SIGMA = 1.4826
MEDIAN_SAMPLE, MEDIAN_BRACKET = 64, 10  # sampled medians: bracket of ±10 of 64 sample ranks
BLOCK_BASELINES = 8  # cross-correlations per block of the fused kernels
GAUSSIAN_TRUNCATE = 4.0  # background kernel radius in σ (as scipy.ndimage)
MIN_BACKGROUND_WEIGHT = 1e-3  # below: no unflagged sample near enough, no background
BASE, FOUND = np.uint8(1), np.uint8(2)  # state bits: flagged before RFI detection, found

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")


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


# --- order statistics -------------------------------------------------------------------

@_jit
def _partition(buf: NDArray, lo: int, hi: int, pivot: float, inclusive: bool) -> int:
    """Branch-free Lomuto partition of ``buf[lo:hi]``: values below ``pivot`` (or, with
    ``inclusive``, not above it) first; returns where the rest starts."""
    first = lo
    for i in range(lo, hi):
        x = buf[i]
        before = (x <= pivot) if inclusive else (x < pivot)
        buf[i] = buf[first]
        buf[first] = x
        first += before
    return first


@_jit
def _select(buf: NDArray, n: int, k: int) -> float:
    """The ``k``-th smallest of ``buf[:n]`` (quickselect with median-of-three pivots and
    branch-free partitions, in place: afterwards ``buf[:k]`` holds the smaller values)."""
    lo, hi = 0, n
    while hi - lo > 1:
        a, b, c = buf[lo], buf[(lo + hi) // 2], buf[hi - 1]
        pivot = max(min(a, b), min(max(a, b), c))
        split = _partition(buf, lo, hi, pivot, False)
        if k < split:
            hi = split
        elif 8 * (split - lo) < hi - lo:  # lopsided: set the values equal to the pivot apart
            lo = split
            split = _partition(buf, lo, hi, pivot, True)
            if k < split:
                return pivot
            lo = split
        else:
            lo = split
    return buf[k]


@_jit
def _max(values: NDArray, lo: int, hi: int) -> float:
    """Largest of ``values[lo:hi]`` (-inf if empty), four running maxima at a time."""
    m0 = m1 = m2 = m3 = -np.inf
    p = lo
    while p + 4 <= hi:
        m0, m1 = max(m0, values[p]), max(m1, values[p + 1])
        m2, m3 = max(m2, values[p + 2]), max(m3, values[p + 3])
        p += 4
    while p < hi:
        m0 = max(m0, values[p])
        p += 1
    return max(max(m0, m1), max(m2, m3))


@_jit
def _median(buf: NDArray, n: int) -> float:
    """Median of ``buf[:n]`` (mean of the two middle values for even ``n``; NaN if empty),
    reordering ``buf``."""
    if n == 0:
        return np.nan
    k = n // 2
    upper = _select(buf, n, k)
    return upper if n % 2 else 0.5 * (_max(buf, 0, k) + upper)


@_jit
def _median_sampled(values: NDArray, n: int, work: NDArray, sample: NDArray) -> float:
    """Median of ``values[:n]`` as ``_median``, for large ``n`` from a bracket: two order
    statistics of a strided sample (``sample.size`` values, ±``MEDIAN_BRACKET`` ranks around
    its middle) bound the middle ranks; one branch-free pass counts the values below the
    bracket and copies those inside to ``work``, where the median is selected. If the
    bracket misses the middle (a few % of cases), the whole set is selected."""
    n_s = sample.size
    if n < 8 * n_s:
        return _median(values, n)
    for i in range(n_s):
        sample[i] = values[(i * n) // n_s]
    lo = _select(sample, n_s, n_s // 2 - MEDIAN_BRACKET)
    hi = _select(sample, n_s, n_s // 2 + MEDIAN_BRACKET - 1)
    below, m = 0, 0
    for i in range(n):
        x = values[i]
        work[m] = x
        m += (x >= lo) & (x <= hi)
        below += x < lo
    low_rank, high_rank = (n - 1) // 2, n // 2
    if below > low_rank or below + m <= high_rank:
        return _median(values, n)
    upper = _select(work, m, high_rank - below)
    return upper if n % 2 else 0.5 * (_max(work, 0, high_rank - below) + upper)


@functools.cache
def sorting_network(n: int) -> NDArray[np.int64]:
    """Comparator pairs (i < j) of Batcher's odd-even merge sort for ``n`` values, ``n``
    rounded up to a power of two (pad with +inf)."""
    size = 1 << max(0, (n - 1).bit_length())
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@_jit
def _network_rows(network: NDArray[np.int64], n: int) -> int:
    """Rows a ``sorting_network`` for ``n`` values sorts (``n`` padded)."""
    rows = n
    for c in range(network.shape[0]):
        rows = max(rows, network[c, 1] + 1)
    return rows


@_jit
def _lane_medians(values: NDArray[np.float32], count: NDArray[np.int64],
                  network: NDArray[np.int64], out: NDArray[np.float32]) -> None:
    """Median of each column (lane) of ``values`` (sample, lane) over its first ``count``
    samples in sorted order: invalid samples and padding rows must be +inf, and the rows as
    many as ``network`` (``sorting_network``) sorts. Sorts all lanes at once (SIMD), for few
    samples and many lanes."""
    for c in range(network.shape[0]):
        a, b = values[network[c, 0]], values[network[c, 1]]
        for q in range(a.size):
            x, y = a[q], b[q]
            a[q] = min(x, y)
            b[q] = max(x, y)
    for q in range(out.size):
        m = count[q]
        out[q] = 0.5 * (values[(m - 1) // 2, q] + values[m // 2, q]) if m else np.nan


@_jit
def _key(value: float) -> int:
    """Order-preserving 16-bit key (0..65535) of a float32: sign, exponent, 7 mantissa bits."""
    bits = np.float32(value).view(np.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (ordered >> 16) + 32768


@_jit
def _unkey(ordered: int) -> float:
    """The float32 of an order-preserving 32-bit pattern (inverse of ``_key`` before its
    truncation to 16 bits)."""
    bits = np.int32(ordered ^ ((ordered >> 31) & 0x7FFFFFFF))
    return float(bits.view(np.float32))


@_jit
def _key_bounds(key: int) -> tuple[float, float]:
    """The smallest and largest float32 with 16-bit key ``key`` (-inf/+inf beyond the finite
    range)."""
    ordered = np.int32((key - 32768) * 65536)
    lo, hi = _unkey(ordered), _unkey(ordered | 0xFFFF)
    return (lo if not np.isnan(lo) else -np.inf), (hi if not np.isnan(hi) else np.inf)


@_jit
def _pooled_value(v: np.float32, centre: float, deviation: bool) -> np.float32:
    """A residual, or its absolute deviation from ``centre`` (in float32, as NumPy)."""
    return abs(v - np.float32(centre)) if deviation else v


@_jit
def _key_histogram(residual: NDArray[np.float32], state: NDArray[np.uint8], centre: float,
                   deviation: bool) -> NDArray[np.int64]:
    """Histogram of the 16-bit keys of the pooled values (see ``_pooled_median``)."""
    flat_r, flat_s = residual.ravel(), state.ravel()
    counts = np.zeros(65536, np.int64)
    for i in range(flat_r.size):
        v = flat_r[i]
        if flat_s[i] == 0 and np.isfinite(v):
            counts[_key(_pooled_value(v, centre, deviation))] += 1
    return counts


@_jit
def _gather_between(residual: NDArray[np.float32], state: NDArray[np.uint8], centre: float,
                    deviation: bool, lo: float, hi: float, capacity: int
                    ) -> tuple[NDArray[np.float32], int, int]:
    """The pooled values x (unflagged residuals, or with ``deviation`` their absolute
    deviation from ``centre``) with ``lo`` < x <= ``hi`` (at most ``capacity`` kept), how
    many are <= ``lo``, and how many are between. Runs of 256 samples with none between are
    only counted (vectorised), so a narrow range costs little more than one read."""
    flat_r, flat_s = residual.ravel(), state.ravel()
    values = np.empty(capacity, np.float32)
    below, between = 0, 0
    for start in range(0, flat_r.size, 32):
        run_r, run_s = flat_r[start:start + 32], flat_s[start:start + 32]
        hits = 0
        for i in range(run_r.size):
            x = _pooled_value(run_r[i], centre, deviation)
            unflagged = run_s[i] == 0
            below += unflagged & (x <= lo)
            hits += unflagged & (x > lo) & (x <= hi)
        if hits:
            for i in range(run_r.size):
                x = _pooled_value(run_r[i], centre, deviation)
                if run_s[i] == 0 and lo < x <= hi:
                    if between < capacity:
                        values[between] = x
                    between += 1
    return values[:min(between, capacity)], below, between


@_jit
def _gather_keys(residual: NDArray[np.float32], state: NDArray[np.uint8], centre: float,
                 deviation: bool, first: int, last: int, size: int) -> NDArray[np.float32]:
    """The pooled values whose keys are in ``first..last`` (``size`` of them)."""
    flat_r, flat_s = residual.ravel(), state.ravel()
    values = np.empty(size, np.float32)
    m = 0
    for i in range(flat_r.size):
        v = flat_r[i]
        if flat_s[i] == 0 and np.isfinite(v):
            x = _pooled_value(v, centre, deviation)
            if first <= _key(x) <= last:
                values[m] = x
                m += 1
    return values


@_jit
def _middle(values: NDArray[np.float32], low_rank: int, high_rank: int) -> float:
    """Mean of the values of two adjacent (or equal) ranks of ``values`` (reordered), in
    float32 as ``numpy.median``."""
    high = _select(values, values.size, high_rank)
    low = _max(values, 0, high_rank) if low_rank < high_rank else high
    return 0.5 * (np.float32(low) + np.float32(high))


@_jit
def _pooled_median(residual: NDArray[np.float32], state: NDArray[np.uint8], centre: float,
                   deviation: bool, counts: NDArray[np.int64]) -> float:
    """Exact median of the residuals (or, with ``deviation``, of their absolute deviation from
    ``centre``) over unflagged (``state == 0``), finite samples; NaN if there are none.

    No chunk-sized copy: ``counts``, the histogram of the values' 16-bit order-preserving
    keys, finds the bins of the middle ranks, then only the values of those bins are gathered
    and selected.
    """
    n = counts.sum()
    if n == 0:
        return np.nan
    low_rank, high_rank = (n - 1) // 2, n // 2
    below, first, last, cumulative = 0, -1, -1, 0
    for key in range(65536):
        if first < 0 and cumulative + counts[key] > low_rank:
            first, below = key, cumulative
        cumulative += counts[key]
        if cumulative > high_rank:
            last = key
            break
    lo = float(np.nextafter(np.float32(_key_bounds(first)[0]), np.float32(-np.inf)))
    values, n_below, n_between = _gather_between(residual, state, centre, deviation, lo,
                                                 _key_bounds(last)[1], cumulative - below)
    if n_below != below or n_between != cumulative - below:  # -0.0 and +0.0 in the bins
        values = _gather_keys(residual, state, centre, deviation, first, last,
                              cumulative - below)
    return _middle(values, low_rank - below, high_rank - below)


@_jit
def _count_within(cumulative: NDArray[np.int64], centre: float, d: float,
                  inner: bool) -> int:
    """From the key histogram (``cumulative`` counts): how many values lie in bins strictly
    inside (``inner``) or touching [centre - d, centre + d]."""
    a, b = _key(centre - d), _key(centre + d)
    if inner:
        return max(0, cumulative[b - 1] - cumulative[a]) if b - 1 > a else 0
    return cumulative[b] - (cumulative[a - 1] if a > 0 else 0)


@_jit
def _bisect_deviation(cumulative: NDArray[np.int64], centre: float, target: int,
                      inner: bool) -> float:
    """Smallest d >= 0 (as float32) whose bins strictly inside (``inner``) or touching
    [centre - d, centre + d] hold more than ``target`` values (+inf if none does)."""
    lo, hi = 0, 0x7F800000  # float32 bit patterns of 0 and +inf: ordered like the values
    while lo < hi:
        mid = (lo + hi) // 2
        d = float(np.int32(mid).view(np.float32))
        if _count_within(cumulative, centre, d, inner) > target:
            hi = mid
        else:
            lo = mid + 1
    return float(np.int32(lo).view(np.float32))


@_jit
def _pooled_mad(residual: NDArray[np.float32], state: NDArray[np.uint8], centre: float,
                counts: NDArray[np.int64]) -> float:
    """Exact median absolute deviation from ``centre`` of the pooled residuals, in one read:
    the key histogram of the residuals (``counts``) brackets it between two deviations, then
    only deviations inside the bracket are gathered. Falls back to a histogram of the
    deviations if the bracket misses (it is checked)."""
    n = counts.sum()
    if n == 0:
        return np.nan
    low_rank, high_rank = (n - 1) // 2, n // 2
    cumulative = np.cumsum(counts)
    margin = 1e-6 * abs(centre)
    d_hi = _bisect_deviation(cumulative, centre, high_rank, True)
    d_lo = _bisect_deviation(cumulative, centre, low_rank - 1, False) if low_rank else 0.0
    d_lo = max(-1.0, (1 - 1e-6) * d_lo - margin - 1e-30)
    d_hi = (1 + 1e-6) * d_hi + margin + 1e-30
    capacity = (_count_within(cumulative, centre, d_hi, False)
                - _count_within(cumulative, centre, max(d_lo, 0.0), True))
    if np.isfinite(d_hi) and capacity <= n // 8:
        values, n_below, n_between = _gather_between(residual, state, centre, True, d_lo,
                                                     d_hi, capacity)
        if n_below <= low_rank and n_below + n_between > high_rank and n_between <= capacity:
            return _middle(values, low_rank - n_below, high_rank - n_below)
    return _pooled_median(residual, state, centre, True,
                          _key_histogram(residual, state, centre, True))


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
    lines = np.empty((_network_rows(network, n_t), n_f, n_q), np.float32)
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
        _lane_medians(lines.reshape(lines.shape[0], n_f * n_q), count.ravel(), network,
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
                ratio[t, f, p] = _median_sampled(values[f, p], filled[f, p], work, sample)
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
    values = np.empty((_network_rows(network, n_t * n_p), n_f - 1), np.float32)
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
        _lane_medians(values, count, network, medians)
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
                histogram[_key(v)] += 1
    for q in range(n_q):
        if not changed[q]:
            continue
        line, m = values[q], count[q]
        centre = _median_sampled(line, m, work, sample)
        for i in range(m):
            line[i] = abs(line[i] - centre)
        sigma[q] = MAD_TO_SIGMA * _median_sampled(line, m, work, sample)


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
def _gather_state(out: NDArray[np.bool_], blocks: NDArray[np.int64],
                  state: NDArray[np.uint8]) -> None:
    """``BASE`` where a block's sample is flagged already (and on padding lanes)."""
    _, n_t, n_f, _ = state.shape
    n_p = out.shape[3]
    for k in range(blocks.shape[0]):
        for t in range(n_t):
            for j in range(blocks.shape[1]):
                b = blocks[k, j]
                for f in range(n_f):
                    for p in range(n_p):
                        state[k, t, f, j * n_p + p] = BASE if b < 0 or out[t, b, f, p] else 0


@_jit
def _scatter_state(state: NDArray[np.uint8], blocks: NDArray[np.int64],
                   out: NDArray[np.bool_]) -> None:
    """Flag in ``out`` what the blocks' ``state`` marks ``FOUND``."""
    _, n_t, n_f, _ = state.shape
    n_p = out.shape[3]
    for k in range(blocks.shape[0]):
        for t in range(n_t):
            for j in range(blocks.shape[1]):
                b = blocks[k, j]
                if b >= 0:
                    for f in range(n_f):
                        for p in range(n_p):
                            out[t, b, f, p] |= (state[k, t, f, j * n_p + p] & FOUND) != 0


def baseline_blocks(cross: NDArray[np.int64], size: int = BLOCK_BASELINES
                    ) -> NDArray[np.int64]:
    """Cross-correlation indices in blocks of ``size`` (block, baseline), padded with -1."""
    padded = np.full(-(-cross.size // size) * size, -1, np.int64)
    padded[:cross.size] = cross
    return padded.reshape(-1, size)


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
    _gather_state(out, blocks, state)
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
            centre = _pooled_median(residual, state, 0.0, False, histogram)
            floor = MAD_TO_SIGMA * _pooled_mad(residual, state, centre, histogram)
            if not np.isfinite(floor):
                return
            sigma = np.where(plane_sigma >= floor, plane_sigma, floor)  # NaN: the floor
            if np.any(sigma == 0):
                return
        last = i == iterations - 1
        extension = (params.extension_sigma if last and params.extension_sigma is not None
                     else np.inf)
        _detect_pass(residual, state, sigma, scale, windows, clip_sigma, extension, changed)
    _scatter_state(state, blocks, out)
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
    if params.mad_clip_sigma is not None:
        cells = array_wide_outliers(amplitude, flags, cross, params.mad_clip_sigma)
        _flag_cells(flags, cells, cross)
    flags[:, bad_antenna_mask(vis, flags, ant1, ant2, params)] = True
    return None if _all_flagged(flags, cross) else (cross, amplitude)


def flag_subband_inplace(vis: NDArray[np.complex64], flags: NDArray[np.bool_],
                         ant1: NDArray[np.int64], ant2: NDArray[np.int64],
                         params: FlagParameters) -> None:
    """Add the new flags of one subband chunk to ``flags``. See the module docstring."""
    screened = screen_subband(vis, flags, ant1, ant2, params)
    if screened is not None:
        detect_rfi(screened[1], flags, screened[0], params)


def flag_subband(vis: NDArray[np.complex64], flags: NDArray[np.bool_],
                 ant1: NDArray[np.int64], ant2: NDArray[np.int64],
                 params: FlagParameters) -> NDArray[np.bool_]:
    """New flags for one subband chunk (existing flags kept; ``flags`` is not modified)."""
    out = flags.copy()
    flag_subband_inplace(vis, out, ant1, ant2, params)
    return out


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


