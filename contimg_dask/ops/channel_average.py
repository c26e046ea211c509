"""Visibility kernels of the export for imaging (plain Numba on one subband's arrays):
weighted channel averaging and a per-integration, per-channel rescaling of the data.

Arrays are (time, baseline, channel, polarization); weights are inverse variances.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(nogil=True, cache=True, inline="always")
def weighted_mean(vis: NDArray, flag: NDArray, weight: NDArray) -> tuple[complex, float, bool]:
    """(value, weight, flagged) of 1-D samples averaged into one: the weighted mean of the
    unflagged samples and the sum of their weights; where every sample is flagged (or
    weightless), the plain mean, the sum of all weights, flagged."""
    total = 0j
    w_total = 0.0
    plain = 0j
    w_all = 0.0
    for i in range(len(vis)):
        w = weight[i]
        plain += vis[i]
        w_all += w
        if not flag[i]:
            total += w * vis[i]
            w_total += w
    if w_total > 0:
        return total / w_total, w_total, False
    return plain / len(vis), w_all, True


@numba.njit(nogil=True, cache=True)
def _average(vis: NDArray, flag: NDArray, weight: NDArray, width: int, out_vis: NDArray,
             out_flag: NDArray, out_weight: NDArray) -> None:
    n_t, n_b, n_c, n_p = vis.shape
    for t in range(n_t):
        for b in range(n_b):
            for k in range(n_c // width):
                c = slice(k * width, (k + 1) * width)
                for p in range(n_p):
                    value, w, flagged = weighted_mean(vis[t, b, c, p], flag[t, b, c, p],
                                                      weight[t, b, c, p])
                    out_vis[t, b, k, p] = value
                    out_weight[t, b, k, p] = w
                    out_flag[t, b, k, p] = flagged


def average_channels(vis: NDArray[np.complex64], flag: NDArray[np.bool_],
                     weight: NDArray[np.float32], width: int,
                     out: tuple[NDArray, NDArray, NDArray] | None = None
                     ) -> tuple[NDArray[np.complex64], NDArray[np.bool_], NDArray[np.float32]]:
    """Average ``width`` adjacent channels: the weighted mean of the unflagged samples,
    weight = the sum of their weights, flagged only where every sample is (CASA
    ``mstransform`` with ``chanaverage`` and ``keepflags`` does the same). Returns
    (vis, flag, weight) of shape (time, baseline, channel // width, polarization), written
    into ``out`` when given."""
    n_t, n_b, n_c, n_p = vis.shape
    if n_c % width:
        raise ValueError(f"{width} does not divide {n_c} channels")
    shape = (n_t, n_b, n_c // width, n_p)
    if out is None:
        out = (np.empty(shape, np.complex64), np.empty(shape, np.bool_),
               np.empty(shape, np.float32))
    _average(vis, flag, weight, width, *out)
    return out


@numba.njit(nogil=True, cache=True)
def _rescale(vis: NDArray, weight: NDArray, scale: NDArray) -> None:
    n_t, n_b, n_c, n_p = vis.shape
    for t in range(n_t):
        for c in range(n_c):
            g = scale[t, c]
            inverse_square = np.float32(1.0 / (g * g))
            for b in range(n_b):
                for p in range(n_p):
                    vis[t, b, c, p] *= np.float32(g)
                    weight[t, b, c, p] *= inverse_square


def rescale_visibilities(vis: NDArray[np.complex64], weight: NDArray[np.float32],
                         scale: NDArray[np.float64]) -> None:
    """In place: visibilities times ``scale[time, channel]``, weights divided by its square
    (the noise scales with the data)."""
    _rescale(vis, weight, np.ascontiguousarray(scale, np.float64))


@numba.njit(nogil=True, cache=True)
def _scale_only(vis: NDArray, scale: NDArray) -> None:
    n_t, n_b, n_c, n_p = vis.shape
    for t in range(n_t):
        for c in range(n_c):
            g = np.float32(scale[t, c])
            for b in range(n_b):
                for p in range(n_p):
                    vis[t, b, c, p] *= g


def scale_visibilities(vis: NDArray[np.complex64], scale: NDArray[np.float64]) -> None:
    """In place: visibilities times ``scale[time, channel]`` (weights untouched: for a second
    data column that shares the first one's weights)."""
    _scale_only(vis, np.ascontiguousarray(scale, np.float64))
