"""Robust order statistics as Numba kernels: selection, medians (exact, bracketed from a
sample, or of many short lanes at once through a sorting network), and the exact median and
median absolute deviation of a large pooled set from a histogram of order-preserving 16-bit
keys, without a copy of the set.

The pooled statistics take the values and a byte mask of the same shape (``state``): a value
counts where its mask byte is 0 and it is finite; what the mask means is the caller's.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numpy.typing import NDArray

MAD_TO_SIGMA = 1.4826  # robust σ of a Gaussian per unit median absolute deviation
MEDIAN_SAMPLE, MEDIAN_BRACKET = 64, 10  # sampled medians: bracket of ±10 of 64 sample ranks

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")


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
def select(buf: NDArray, n: int, k: int) -> float:
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
def median(buf: NDArray, n: int) -> float:
    """Median of ``buf[:n]`` (mean of the two middle values for even ``n``; NaN if empty),
    reordering ``buf``."""
    if n == 0:
        return np.nan
    k = n // 2
    upper = select(buf, n, k)
    return upper if n % 2 else 0.5 * (_max(buf, 0, k) + upper)


@_jit
def median_sampled(values: NDArray, n: int, work: NDArray, sample: NDArray) -> float:
    """Median of ``values[:n]`` as ``median``, for large ``n`` from a bracket: two order
    statistics of a strided sample (``sample.size`` values, ±``MEDIAN_BRACKET`` ranks around
    its middle) bound the middle ranks; one branch-free pass counts the values below the
    bracket and copies those inside to ``work``, where the median is selected. If the
    bracket misses the middle (a few % of cases), the whole set is selected."""
    n_s = sample.size
    if n < 8 * n_s:
        return median(values, n)
    for i in range(n_s):
        sample[i] = values[(i * n) // n_s]
    lo = select(sample, n_s, n_s // 2 - MEDIAN_BRACKET)
    hi = select(sample, n_s, n_s // 2 + MEDIAN_BRACKET - 1)
    below, m = 0, 0
    for i in range(n):
        x = values[i]
        work[m] = x
        m += (x >= lo) & (x <= hi)
        below += x < lo
    low_rank, high_rank = (n - 1) // 2, n // 2
    if below > low_rank or below + m <= high_rank:
        return median(values, n)
    upper = select(work, m, high_rank - below)
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
def network_rows(network: NDArray[np.int64], n: int) -> int:
    """Rows a ``sorting_network`` for ``n`` values sorts (``n`` padded)."""
    rows = n
    for c in range(network.shape[0]):
        rows = max(rows, network[c, 1] + 1)
    return rows


@_jit
def lane_medians(values: NDArray[np.float32], count: NDArray[np.int64],
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
def order_key(value: float) -> int:
    """Order-preserving 16-bit key (0..65535) of a float32: sign, exponent, 7 mantissa bits."""
    bits = np.float32(value).view(np.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (ordered >> 16) + 32768


@_jit
def _unkey(ordered: int) -> float:
    """The float32 of an order-preserving 32-bit pattern (inverse of ``order_key`` before its
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
def key_histogram(residual: NDArray[np.float32], state: NDArray[np.uint8], centre: float,
                   deviation: bool) -> NDArray[np.int64]:
    """Histogram of the 16-bit keys of the pooled values (see ``pooled_median``)."""
    flat_r, flat_s = residual.ravel(), state.ravel()
    counts = np.zeros(65536, np.int64)
    for i in range(flat_r.size):
        v = flat_r[i]
        if flat_s[i] == 0 and np.isfinite(v):
            counts[order_key(_pooled_value(v, centre, deviation))] += 1
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
            if first <= order_key(x) <= last:
                values[m] = x
                m += 1
    return values


@_jit
def _middle(values: NDArray[np.float32], low_rank: int, high_rank: int) -> float:
    """Mean of the values of two adjacent (or equal) ranks of ``values`` (reordered), in
    float32 as ``numpy.median``."""
    high = select(values, values.size, high_rank)
    low = _max(values, 0, high_rank) if low_rank < high_rank else high
    return 0.5 * (np.float32(low) + np.float32(high))


@_jit
def pooled_median(residual: NDArray[np.float32], state: NDArray[np.uint8], centre: float,
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
    a, b = order_key(centre - d), order_key(centre + d)
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
def pooled_mad(residual: NDArray[np.float32], state: NDArray[np.uint8], centre: float,
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
    return pooled_median(residual, state, centre, True,
                          key_histogram(residual, state, centre, True))
