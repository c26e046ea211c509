"""One amplitude, phase and SNR per antenna from a solve's solutions (plain NumPy): the
numbers the dashboard plots per antenna and calibrator block.

The complex voltage gain of antenna a at channel f, polarisation p is
g = GAIN_BLOCK[a, p] · BANDPASS[a, f, p] (the solutions store's convention, phases
referenced to the reference antenna). Per antenna, over its unflagged (channel, polarisation)
samples:

- amplitude: the median of |g| (dimensionless, the store's gain units);
- phase: the circular mean of arg g, degrees in (-180, 180];
- SNR: the median of the whole-block gain's SNR over its unflagged polarisations.

An antenna with no unflagged sample has NaN in all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class AntennaSolutionSummary:
    """Per-antenna arrays (antenna order of the solutions)."""

    amplitude: NDArray[np.float64]
    phase_deg: NDArray[np.float64]
    snr: NDArray[np.float64]


def summarise_solutions(gain_block: NDArray, gain_block_flag: NDArray,
                        gain_block_snr: NDArray, bandpass: NDArray, bandpass_flag: NDArray
                        ) -> AntennaSolutionSummary:
    """The per-antenna summary (see the module docstring).

    ``gain_block``/``gain_block_flag``/``gain_block_snr``: (antenna, polarisation);
    ``bandpass``/``bandpass_flag``: (antenna, channel, polarisation).
    """
    gain = np.asarray(gain_block)[:, None, :] * np.asarray(bandpass)
    usable = ~(np.asarray(bandpass_flag) | np.asarray(gain_block_flag)[:, None, :])
    usable &= np.isfinite(gain) & (np.abs(gain) > 0)
    n_ant = gain.shape[0]
    amplitude = np.full(n_ant, np.nan)
    phase = np.full(n_ant, np.nan)
    snr = np.full(n_ant, np.nan)
    for a in range(n_ant):
        g = gain[a][usable[a]]
        if g.size == 0:
            continue
        amplitude[a] = np.median(np.abs(g))
        phase[a] = np.degrees(np.angle(np.sum(g / np.abs(g))))
        good = ~np.asarray(gain_block_flag)[a] & np.isfinite(gain_block_snr[a])
        snr[a] = np.median(np.asarray(gain_block_snr)[a][good]) if good.any() else np.nan
    return AntennaSolutionSummary(amplitude, phase, snr)
