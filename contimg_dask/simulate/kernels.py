"""Numba kernels of the simulator (plain arrays in, arrays out)."""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray


@numba.njit(parallel=True, nogil=True, cache=True)
def sum_point_sources(delay_s: NDArray[np.float64], amplitude_jy: NDArray[np.float64],
                      time_index: NDArray[np.int64], freq0_hz: float, dfreq_hz: float,
                      out: NDArray[np.complex128]) -> None:
    """Accumulate point-source visibilities into ``out`` (n_row, n_chan), in place.

    ``out[r, c] += Σ_s amplitude_jy[s, time_index[r], c] · exp(+2πi ν_c delay_s[s, r])``
    with ``ν_c = freq0_hz + c · dfreq_hz`` (uniform channels; the phasor is advanced by a
    complex rotation per channel instead of an exponential).
    ``delay_s`` is (w_source - w_phase_centre) / c per source and row, seconds.
    """
    n_src, n_row = delay_s.shape
    n_chan = out.shape[1]
    two_pi = 2.0 * math.pi
    for r in numba.prange(n_row):
        t = time_index[r]
        for s in range(n_src):
            tau = delay_s[s, r]
            phase = two_pi * freq0_hz * tau
            step = two_pi * dfreq_hz * tau
            z = complex(math.cos(phase), math.sin(phase))
            dz = complex(math.cos(step), math.sin(step))
            for c in range(n_chan):
                out[r, c] += amplitude_jy[s, t, c] * z
                z = z * dz
