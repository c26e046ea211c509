"""Baseline-dependent time averaging (BDA) for the export for imaging: each baseline averages
as many consecutive integrations as it can while the time smearing of a source at the edge
of the imaged field stays under a bound (plain NumPy/Numba on one subband's arrays).

A baseline whose uv track moves at (u̇, v̇, ẇ) wavelengths per second turns the phase of a
source at (l, m), |(l, m)| = sin θ, at 2π (u̇ l + v̇ m + ẇ (n − 1)) per second, at most
2π r with r = |(u̇, v̇)| sin θ + |ẇ| (1 − cos θ). Averaging its track over a span T (n
recorded integrations of τ seconds, T = n τ) multiplies that source's fringe by
sinc(r T) (np.sinc; ops/smearing.py's :func:`~contimg_dask.ops.smearing.time_smearing_peak_ratio`
averages the same factor over the visibilities). The largest n with sinc(r n τ) ≥ 1 − L keeps
every direction within θ at a loss ≤ L on that baseline, counting the recorded integration
itself, and so the image's peak loss (a weighted mean of these factors) ≤ L there too.
Baselines whose recorded integration already loses more are not averaged (n = 1).

Arrays are (time, baseline, channel, polarization); weights are inverse variances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq

from contimg_dask.constants import SPEED_OF_LIGHT
from contimg_dask.ops.channel_average import weighted_mean


def sinc_argument_for_loss(max_loss: float) -> float:
    """The x in [0, 1) with sinc(x) = 1 − ``max_loss`` (np.sinc: sin(πx)/(πx))."""
    if not 0 < max_loss < 1:
        raise ValueError(f"loss {max_loss} must lie in (0, 1)")
    return float(brentq(lambda x: np.sinc(x) - (1 - max_loss), 0.0, 1.0, xtol=1e-12))


def baseline_fringe_rates(uvw_m: NDArray[np.float64], interval_s: float, freq_hz: float,
                          field_radius_rad: float) -> NDArray[np.float64]:
    """The largest fringe rate (turns per second) of a source within ``field_radius_rad`` of
    the phase centre on each baseline, over the block: r = |(u̇, v̇)| sin θ + |ẇ| (1 − cos θ)
    from consecutive integrations' UVWs (``uvw_m``: time, baseline, 3; metres), at
    ``freq_hz`` (take the band's top: the fastest). Shape (baseline,)."""
    uvw = np.asarray(uvw_m, np.float64)
    if uvw.shape[0] < 2:
        return np.zeros(uvw.shape[1])
    rate = np.abs(np.diff(uvw, axis=0)) / interval_s * freq_hz / SPEED_OF_LIGHT
    uv_rate = np.hypot(rate[..., 0], rate[..., 1]).max(axis=0)
    return (uv_rate * np.sin(field_radius_rad)
            + rate[..., 2].max(axis=0) * (1 - np.cos(field_radius_rad)))


def averaging_factors(fringe_rate_hz: NDArray[np.float64], interval_s: float,
                      max_loss: float, n_times: int) -> NDArray[np.int64]:
    """Integrations to average per baseline: the largest n ≤ ``n_times`` with
    sinc(rate n τ) ≥ 1 − ``max_loss`` (1 where even n = 1 loses more)."""
    x_max = sinc_argument_for_loss(max_loss)
    turns = np.asarray(fringe_rate_hz, float) * interval_s
    with np.errstate(divide="ignore"):
        n = np.where(turns > 0, np.floor(x_max / np.maximum(turns, 1e-300)), n_times)
    return np.clip(n, 1, n_times).astype(np.int64)


@dataclass(frozen=True)
class TimeAveraging:
    """Which integrations each output row averages: row i is baseline ``baseline[i]`` over
    integrations ``start[i]`` to ``stop[i]`` (exclusive). Rows are ordered by the midpoint of
    their span, then by baseline, so that the Measurement Set stays in time order."""

    baseline: NDArray[np.int64]
    start: NDArray[np.int64]
    stop: NDArray[np.int64]
    n_times: int
    factors: NDArray[np.int64]

    @classmethod
    def from_factors(cls, factors: NDArray[np.int64], n_times: int) -> TimeAveraging:
        """Consecutive groups of ``factors[b]`` integrations per baseline (the last group of
        a baseline may be shorter)."""
        baselines, starts = [], []
        for b, n in enumerate(np.asarray(factors, np.int64)):
            group_starts = np.arange(0, n_times, n)
            starts.append(group_starts)
            baselines.append(np.full(len(group_starts), b))
        baseline, start = np.concatenate(baselines), np.concatenate(starts)
        stop = np.minimum(start + np.asarray(factors)[baseline], n_times)
        order = np.lexsort((baseline, start + stop))
        return cls(baseline[order], start[order], stop[order], n_times,
                   np.asarray(factors, np.int64))

    @property
    def n_rows(self) -> int:
        return len(self.baseline)

    def midpoints(self, times: NDArray[np.float64]) -> NDArray[np.float64]:
        """Each row's TIME: the middle of its span, from the integrations' centre ``times``."""
        return (times[self.start] + times[self.stop - 1]) / 2

    def intervals(self, interval_s: float) -> NDArray[np.float64]:
        """Each row's INTERVAL (seconds): its number of integrations times ``interval_s``."""
        return (self.stop - self.start) * float(interval_s)


@numba.njit(nogil=True, cache=True)
def _average_rows(vis: NDArray, flag: NDArray, weight: NDArray, row_bl: NDArray,
                  row_start: NDArray, row_stop: NDArray, out_vis: NDArray,
                  out_flag: NDArray, out_weight: NDArray) -> None:
    n_c, n_p = vis.shape[2], vis.shape[3]
    for r in range(len(row_bl)):
        b, span = row_bl[r], slice(row_start[r], row_stop[r])
        for c in range(n_c):
            for p in range(n_p):
                value, w, flagged = weighted_mean(vis[span, b, c, p], flag[span, b, c, p],
                                                  weight[span, b, c, p])
                out_vis[r, c, p] = value
                out_weight[r, c, p] = w
                out_flag[r, c, p] = flagged


def average_rows(averaging: TimeAveraging, vis: NDArray[np.complex64],
                 flag: NDArray[np.bool_], weight: NDArray[np.float32],
                 out: tuple[NDArray, NDArray, NDArray] | None = None
                 ) -> tuple[NDArray[np.complex64], NDArray[np.bool_], NDArray[np.float32]]:
    """Average each row's integrations: the weighted mean of the unflagged samples, weight =
    the sum of their weights, flagged only where every sample is (as
    :func:`~contimg_dask.ops.channel_average.average_channels` does along frequency).
    Returns (vis, flag, weight) of shape (row, channel, polarization), written into ``out``
    when given."""
    shape = (averaging.n_rows, vis.shape[2], vis.shape[3])
    if out is None:
        out = (np.empty(shape, np.complex64), np.empty(shape, np.bool_),
               np.empty(shape, np.float32))
    _average_rows(vis, flag, weight, averaging.baseline, averaging.start, averaging.stop, *out)
    return out


@numba.njit(nogil=True, cache=True)
def _row_centroids(values: NDArray, weight: NDArray, flag: NDArray, row_bl: NDArray,
                   row_start: NDArray, row_stop: NDArray, out: NDArray) -> None:
    n_c, n_p = weight.shape[2], weight.shape[3]
    for r in range(len(row_bl)):
        b, t0, t1 = row_bl[r], row_start[r], row_stop[r]
        w_total = 0.0
        for k in range(values.shape[2]):
            out[r, k] = 0.0
        for t in range(t0, t1):
            w = 0.0
            for c in range(n_c):
                for p in range(n_p):
                    if not flag[t, b, c, p]:
                        w += weight[t, b, c, p]
            w_total += w
            for k in range(values.shape[2]):
                out[r, k] += w * values[t, b, k]
        if w_total > 0:
            for k in range(values.shape[2]):
                out[r, k] /= w_total
        else:  # every sample flagged: the plain mean
            for k in range(values.shape[2]):
                total = 0.0
                for t in range(t0, t1):
                    total += values[t, b, k]
                out[r, k] = total / (t1 - t0)


def row_centroids(averaging: TimeAveraging, values: NDArray[np.float64],
                  weight: NDArray[np.float32], flag: NDArray[np.bool_]
                  ) -> NDArray[np.float64]:
    """Per output row, the mean of ``values`` (time, baseline, k: e.g. UVW, or TIME) over its
    integrations, each weighted by the sum of its unflagged weights over channels and
    polarizations (the plain mean where all are flagged). Shape (row, k)."""
    out = np.empty((averaging.n_rows, values.shape[2]), np.float64)
    _row_centroids(np.ascontiguousarray(values, np.float64), weight, flag, averaging.baseline,
                   averaging.start, averaging.stop, out)
    return out


@numba.njit(nogil=True, cache=True)
def _row_live_integrations(flag: NDArray, row_bl: NDArray, row_start: NDArray,
                           row_stop: NDArray, out: NDArray) -> None:
    n_c, n_p = flag.shape[2], flag.shape[3]
    for r in range(len(row_bl)):
        b, count = row_bl[r], 0
        for t in range(row_start[r], row_stop[r]):
            live = False
            for c in range(n_c):
                for p in range(n_p):
                    if not flag[t, b, c, p]:
                        live = True
                        break
                if live:
                    break
            count += live
        out[r] = count


def row_exposures(averaging: TimeAveraging, flag: NDArray[np.bool_],
                  interval_s: float) -> NDArray[np.float64]:
    """Each row's EXPOSURE (seconds): ``interval_s`` times the number of its integrations
    holding at least one unflagged sample (``flag``: time, baseline, channel, polarization),
    the MS definition's effective interval, which counts bad data out (INTERVAL stays the
    nominal span); the whole span where every sample is flagged (the row is flagged, as an
    unaveraged row's EXPOSURE stays its interval). Shape (row,)."""
    live = np.empty(averaging.n_rows, np.int64)
    _row_live_integrations(flag, averaging.baseline, averaging.start, averaging.stop, live)
    span = averaging.stop - averaging.start
    return np.where(live > 0, live, span) * float(interval_s)
