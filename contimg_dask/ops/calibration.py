"""Antenna-based calibration on in-memory arrays (plain NumPy/Numba).

Convention: the block store's visibility of baseline (a, b) = (antenna1, antenna2) is

    V_ab = conj(g_a) · g_b · M_ab

with g the complex voltage gain of an antenna and M the true (model) visibility. The
Measurement Set stores conj(V), for which CASA's V_ab = g_a · conj(g_b) · M_ab holds with the
same g: solutions move between us and CASA unchanged (tests/integration/test_caltables.py).

The solver is StEFCal (Salvini & Wijnholds 2014, A&A 571, A97): alternating per-antenna
least squares with damping on every second iteration. The data enter it only through
per-baseline sums over a solution cell, so one pass over the visibilities
(:func:`normal_sums`) serves the bandpass (cells = channel) and the gains (cells = time
interval), whatever the number of iterations:

    A = Σ w V conj(M),   B = Σ w |M|²,   C = Σ w |V|²,   N = Σ [w > 0]

With these, the χ² of gains g in a cell is Σ_ab C − 2 Re(conj(c) A) + |c|² B, c = conj(g_a) g_b.
Weights w are the store's WEIGHT (zero where flagged); autocorrelations are never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import NDArray

from contimg_dask.constants import SPEED_OF_LIGHT


@numba.njit(nogil=True, cache=True)
def _point_sources(dw: NDArray, flux: NDArray, freq: NDArray, n_pol: int) -> NDArray:
    n_src, n_t, n_b = dw.shape
    n_f = freq.shape[0]
    out = np.zeros((n_t, n_b, n_f, n_pol), dtype=np.complex64)
    scale = 2.0 * math.pi / SPEED_OF_LIGHT
    for s in range(n_src):
        for t in range(n_t):
            for b in range(n_b):
                k = scale * dw[s, t, b]
                for f in range(n_f):
                    phase = k * freq[f]
                    value = flux[s, t, f] * complex(math.cos(phase), math.sin(phase))
                    for p in range(n_pol):
                        out[t, b, f, p] += value
    return out


def point_source_visibilities(dw_m: NDArray[np.float64], flux_jy: NDArray[np.float64],
                              freq_hz: NDArray[np.float64], n_pol: int
                              ) -> NDArray[np.complex64]:
    """Model visibilities (time, baseline, frequency, polarization) of unpolarized point
    sources: Σ_s S_s(t, ν) · exp(+2πi ν Δw_s / c), the same in every (parallel-hand)
    polarization.

    ``dw_m`` (source, time, baseline) is the path difference w_source − w_phase-centre in
    metres (w = b·s of the baseline b = x[ant2] − x[ant1] and the apparent direction s);
    ``flux_jy`` (source, time, frequency) the apparent (beam-weighted) flux density.
    """
    return _point_sources(np.ascontiguousarray(dw_m, np.float64),
                          np.ascontiguousarray(flux_jy, np.float64),
                          np.ascontiguousarray(freq_hz, np.float64), n_pol)


@numba.njit(nogil=True, cache=True)
def _normal_sums(vis: NDArray, model: NDArray, weight: NDArray, flag: NDArray,
                 ant1: NDArray, ant2: NDArray, time_cell: NDArray, n_cells: int
                 ) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    n_t, n_b, n_f, n_p = vis.shape
    a_sum = np.zeros((n_cells, n_f, n_p, n_b), dtype=np.complex128)
    b_sum = np.zeros((n_cells, n_f, n_p, n_b), dtype=np.float64)
    c_sum = np.zeros((n_cells, n_f, n_p, n_b), dtype=np.float64)
    n_sum = np.zeros((n_cells, n_f, n_p, n_b), dtype=np.int32)
    for t in range(n_t):
        c = time_cell[t]
        for b in range(n_b):
            if ant1[b] == ant2[b]:
                continue
            for f in range(n_f):
                for p in range(n_p):
                    w = weight[t, b, f, p]
                    if flag[t, b, f, p] or not w > 0.0:
                        continue
                    v = vis[t, b, f, p]
                    m = model[t, b, f, p]
                    if not (math.isfinite(v.real) and math.isfinite(v.imag)):
                        continue
                    a_sum[c, f, p, b] += w * v * m.conjugate()
                    b_sum[c, f, p, b] += w * (m.real * m.real + m.imag * m.imag)
                    c_sum[c, f, p, b] += w * (v.real * v.real + v.imag * v.imag)
                    n_sum[c, f, p, b] += 1
    return a_sum, b_sum, c_sum, n_sum


@dataclass
class NormalSums:
    """Per-baseline sums over solution cells, arrays shaped (cells..., baseline)."""

    a: NDArray[np.complex128]  # Σ w V conj(M)
    b: NDArray[np.float64]  # Σ w |M|²
    c: NDArray[np.float64]  # Σ w |V|²
    n: NDArray[np.int32]  # number of visibilities used

    def total(self, axis: int | tuple[int, ...]) -> NormalSums:
        """Sums merged over ``axis`` (a coarser cell)."""
        return NormalSums(self.a.sum(axis), self.b.sum(axis), self.c.sum(axis),
                          self.n.sum(axis, dtype=np.int32))

    def __add__(self, other: NormalSums) -> NormalSums:
        return NormalSums(self.a + other.a, self.b + other.b, self.c + other.c,
                          self.n + other.n)


def normal_sums(vis: NDArray, model: NDArray, weight: NDArray, flag: NDArray,
                ant1: NDArray[np.integer], ant2: NDArray[np.integer],
                time_cell: NDArray[np.integer], n_time_cells: int) -> NormalSums:
    """One pass over (time, baseline, frequency, polarization) data: the sums of the module
    docstring per (time cell, frequency, polarization, baseline). ``time_cell[t]`` is the
    solution interval of integration t."""
    a, b, c, n = _normal_sums(vis, model, weight, flag, np.asarray(ant1, np.int64),
                              np.asarray(ant2, np.int64), np.asarray(time_cell, np.int64),
                              int(n_time_cells))
    return NormalSums(a, b, c, n)


@numba.njit(nogil=True, cache=True)
def _stefcal(a_sum: NDArray, b_sum: NDArray, ant1: NDArray, ant2: NDArray, n_ant: int,
             max_iter: int, tol: float) -> tuple[NDArray, NDArray, NDArray]:
    n_cells, n_b = a_sum.shape
    gains = np.empty((n_cells, n_ant), dtype=np.complex128)
    curvature = np.zeros((n_cells, n_ant), dtype=np.float64)
    iterations = np.zeros(n_cells, dtype=np.int32)
    num = np.empty(n_ant, dtype=np.complex128)
    den = np.empty(n_ant, dtype=np.float64)
    for cell in range(n_cells):
        g = np.ones(n_ant, dtype=np.complex128)
        for it in range(1, max_iter + 1):
            num[:] = 0.0
            den[:] = 0.0
            for b in range(n_b):
                i, j = ant1[b], ant2[b]
                bb = b_sum[cell, b]
                if i == j or bb <= 0.0:
                    continue
                aa = a_sum[cell, b]
                # V = conj(g_i) g_j M: g_j from g_i, and g_i from conj(V) = g_i conj(g_j M).
                num[j] += aa * g[i]
                den[j] += bb * (g[i].real ** 2 + g[i].imag ** 2)
                num[i] += aa.conjugate() * g[j]
                den[i] += bb * (g[j].real ** 2 + g[j].imag ** 2)
            change = 0.0
            norm = 0.0
            for k in range(n_ant):
                new = num[k] / den[k] if den[k] > 0.0 else 0.0
                if it % 2 == 0:
                    new = 0.5 * (new + g[k])
                change += abs(new - g[k]) ** 2
                norm += abs(new) ** 2
                g[k] = new
            iterations[cell] = it
            if norm == 0.0 or change <= tol * tol * norm:
                break
        for k in range(n_ant):
            gains[cell, k] = g[k] if den[k] > 0.0 else np.nan
            curvature[cell, k] = den[k]
    return gains, curvature, iterations


@dataclass
class GainSolution:
    """Gains per cell and antenna with their quality."""

    gains: NDArray[np.complex128]  # (cells..., antenna); NaN where undetermined
    snr: NDArray[np.float64]  # |g| / σ(g)
    chi2_reduced: NDArray[np.float64]  # (cells...)  χ² per visibility, in units of 1/weight
    iterations: NDArray[np.int32]  # (cells...)


def stefcal(sums: NormalSums, ant1: NDArray[np.integer], ant2: NDArray[np.integer],
            n_ant: int, max_iterations: int, tolerance: float) -> GainSolution:
    """Solve V_ab = conj(g_a) g_b M_ab in every cell of ``sums`` (arrays (cells..., baseline)).

    Gains carry an arbitrary common phase per cell until referenced
    (:func:`reference_to_antenna`). SNR is |g_a| over its standard error, from the residual
    scatter σ² = χ² / (N − n_ant) and the curvature Σ_b w |g_b M_ab|².
    """
    shape = sums.a.shape[:-1]
    n_b = sums.a.shape[-1]
    a2 = sums.a.reshape(-1, n_b)
    b2 = sums.b.reshape(-1, n_b)
    ant1 = np.asarray(ant1, np.int64)
    ant2 = np.asarray(ant2, np.int64)
    gains, curvature, iterations = _stefcal(a2, b2, ant1, ant2, int(n_ant),
                                            int(max_iterations), float(tolerance))
    g = np.nan_to_num(gains)
    c = np.conj(g[:, ant1]) * g[:, ant2]
    chi2 = (sums.c.reshape(-1, n_b) - 2 * np.real(np.conj(c) * a2)
            + np.abs(c) ** 2 * b2).sum(axis=1)
    n_vis = sums.n.reshape(-1, n_b).sum(axis=1)
    dof = n_vis - n_ant
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma2 = np.where(dof > 0, np.maximum(chi2, 0.0) / np.maximum(dof, 1), np.nan)
        snr = np.abs(gains) * np.sqrt(curvature / sigma2[:, None])
        chi2_reduced = np.where(n_vis > 0, chi2 / np.maximum(n_vis, 1), np.nan)
    snr = np.where(np.isfinite(snr), snr, 0.0)
    return GainSolution(gains.reshape(*shape, n_ant), snr.reshape(*shape, n_ant),
                        chi2_reduced.reshape(shape), iterations.reshape(shape))


def reference_to_antenna(gains: NDArray[np.complex128], refant: int) -> NDArray[np.complex128]:
    """Gains (cells..., antenna) with the reference antenna's phase removed in every cell:
    g · conj(g_ref) / |g_ref|. Cells where the reference is undetermined become NaN."""
    ref = gains[..., refant:refant + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rotation = np.conj(ref) / np.abs(ref)
    return gains * rotation


def fill_small_gaps(values: NDArray[np.complex128], flags: NDArray[np.bool_],
                    max_gap: int) -> tuple[NDArray[np.complex128], NDArray[np.bool_]]:
    """Interpolate flagged runs of at most ``max_gap`` samples along axis 0 (linearly in
    amplitude and in unwrapped phase between the two neighbours), for every other index.
    Runs at the edges or longer than ``max_gap`` stay flagged."""
    out, out_flags = values.copy(), flags.copy()
    n = values.shape[0]
    flat_v = out.reshape(n, -1)
    flat_f = out_flags.reshape(n, -1)
    for k in range(flat_v.shape[1]):
        bad = flat_f[:, k]
        if not bad.any() or bad.all():
            continue
        start = 0
        while start < n:
            if not bad[start]:
                start += 1
                continue
            stop = start
            while stop < n and bad[stop]:
                stop += 1
            if start > 0 and stop < n and stop - start <= max_gap:
                left, right = flat_v[start - 1, k], flat_v[stop, k]
                x = (np.arange(start, stop) - (start - 1)) / (stop - (start - 1))
                amp = np.abs(left) + x * (np.abs(right) - np.abs(left))
                dphi = np.angle(right * np.conj(left))
                flat_v[start:stop, k] = amp * np.exp(1j * (np.angle(left) + x * dphi))
                flat_f[start:stop, k] = False
            start = stop
    return out, out_flags


def interpolate_in_time(solution_times: NDArray[np.float64], gains: NDArray[np.complex128],
                        flags: NDArray[np.bool_], times: NDArray[np.float64]
                        ) -> tuple[NDArray[np.complex128], NDArray[np.bool_]]:
    """Gains (solution time, ...) at ``times``: linear in amplitude and in phase between the
    two nearest unflagged solutions; held constant beyond the first and last. Returns the
    gains (time, ...) and flags (true where no solution exists)."""
    n_sol = len(solution_times)
    flat_g = gains.reshape(n_sol, -1)
    flat_f = flags.reshape(n_sol, -1)
    out = np.empty((len(times), flat_g.shape[1]), np.complex128)
    out_flags = np.zeros(out.shape, bool)
    for k in range(flat_g.shape[1]):
        good = ~flat_f[:, k] & np.isfinite(flat_g[:, k])
        if not good.any():
            out[:, k] = np.nan
            out_flags[:, k] = True
            continue
        t, g = solution_times[good], flat_g[good, k]
        phase = np.unwrap(np.angle(g))
        out[:, k] = (np.interp(times, t, np.abs(g))
                     * np.exp(1j * np.interp(times, t, phase)))
    return out.reshape(len(times), *gains.shape[1:]), out_flags.reshape(
        len(times), *gains.shape[1:])


@numba.njit(nogil=True, cache=True)
def _apply(vis: NDArray, weight: NDArray, flag: NDArray, inv_gain_t: NDArray,
           inv_bandpass: NDArray, ant1: NDArray, ant2: NDArray, write_flags: bool
           ) -> tuple[NDArray, NDArray, NDArray]:
    n_t, n_b, n_f, n_p = vis.shape
    out = np.empty(vis.shape, dtype=np.complex64)
    out_w = np.empty(weight.shape, dtype=np.float32)
    out_f = np.empty(flag.shape if write_flags else (0, 0, 0, 0), dtype=np.bool_)
    channel_factor = np.empty((n_f, n_p), dtype=np.complex64)
    channel_weight = np.empty((n_f, n_p), dtype=np.float32)  # |b_a b_b|², 0 if flagged
    time_factor = np.empty(n_p, dtype=np.complex64)
    time_weight = np.empty(n_p, dtype=np.float32)
    for b in range(n_b):
        i, j = ant1[b], ant2[b]
        for f in range(n_f):
            for p in range(n_p):
                c = inv_bandpass[f, i, p].conjugate() * inv_bandpass[f, j, p]
                power = c.real * c.real + c.imag * c.imag
                channel_factor[f, p] = c
                channel_weight[f, p] = 1.0 / power if power > 0.0 else 0.0
        for t in range(n_t):
            for p in range(n_p):
                c = inv_gain_t[t, i, p].conjugate() * inv_gain_t[t, j, p]
                power = c.real * c.real + c.imag * c.imag
                time_factor[p] = c
                time_weight[p] = 1.0 / power if power > 0.0 else 0.0
            for f in range(n_f):
                for p in range(n_p):
                    scale = time_weight[p] * channel_weight[f, p]
                    out[t, b, f, p] = vis[t, b, f, p] * (time_factor[p] * channel_factor[f, p])
                    out_w[t, b, f, p] = weight[t, b, f, p] * scale
                    if write_flags:
                        out_f[t, b, f, p] = flag[t, b, f, p] or scale == 0.0
    return out, out_w, out_f


def _inverse(gains: NDArray[np.complex128]) -> NDArray[np.complex64]:
    """1/g, with NaN (a flagged solution) and 0 both becoming 0 (flags the data)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / np.asarray(gains, np.complex128)
    return np.where(np.isfinite(inverse), inverse, 0).astype(np.complex64)


def apply_gains(vis: NDArray, weight: NDArray, flag: NDArray, gain_t: NDArray[np.complex128],
                bandpass: NDArray[np.complex128], ant1: NDArray[np.integer],
                ant2: NDArray[np.integer], write_flags: bool = True
                ) -> tuple[NDArray[np.complex64], NDArray[np.float32], NDArray[np.bool_]]:
    """Correct (time, baseline, frequency, polarization) data with g = G(t) · B(ν):
    V / (conj(g_a) g_b), weights · |g_a g_b|². ``gain_t`` is (time, antenna, polarization),
    ``bandpass`` (frequency, antenna, polarization); a NaN or zero gain (a flagged solution)
    flags the visibility and zeroes its weight. With ``write_flags`` False (no solution is
    flagged) the flags are not copied and an empty array is returned for them."""
    return _apply(vis, weight, flag, _inverse(gain_t), _inverse(bandpass),
                  np.asarray(ant1, np.int64), np.asarray(ant2, np.int64), write_flags)
