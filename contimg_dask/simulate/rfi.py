"""Radio-frequency interference for the simulator, with its truth.

Three kinds, as DSA-110 sees them:

- persistent narrowband channels (the same channels in every block; every cross-correlation);
- broadband bursts (whole integrations, every channel of every subband);
- misbehaving antennas (every baseline to them, all channels, all times; excess power in
  their autocorrelations).

Amplitudes are in Jy (the visibility units). The truth is the modulus of what was added,
per visibility, so a flagger can be scored against any threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from contimg_dask.config.schema import RfiConfig


@dataclass(frozen=True)
class BlockRfi:
    """Where RFI falls in one block (channel indices are per subband, file order)."""

    narrowband: dict[int, list[int]]  # subband -> channels
    burst_integrations: list[int]
    bad_antennas: list[int]  # 0-based antenna numbers


def plan_block_rfi(seed: int, block_index: int, n_subbands: int, n_chan: int, n_time: int,
                   active_antennas: NDArray[np.int64], config: RfiConfig) -> BlockRfi:
    """Choose the RFI of one block. Narrowband channels and bad antennas depend on the seed
    only (persistent); bursts change from block to block."""
    if not config.enabled:
        return BlockRfi({}, [], [])
    persistent = np.random.default_rng([seed, 15485863])
    narrowband = {}
    for sb in range(n_subbands):
        n = persistent.poisson(config.narrowband_channels_per_subband)
        if n:
            narrowband[sb] = sorted(int(c) for c in persistent.choice(n_chan, min(n, n_chan),
                                                                      replace=False))
    n_bad = min(config.bad_antennas, len(active_antennas) - 2)
    bad = sorted(int(a) for a in persistent.choice(active_antennas, n_bad, replace=False))
    per_block = np.random.default_rng([seed, 32452843, block_index])
    bursts = [int(t) for t in np.flatnonzero(
        per_block.random(n_time) < config.burst_probability_per_integration)]
    return BlockRfi(narrowband, bursts, bad)


def subband_rfi(plan: BlockRfi, subband: int, rng: np.random.Generator, ant1: NDArray,
                ant2: NDArray, time_index: NDArray, n_chan: int, n_pol: int,
                config: RfiConfig) -> NDArray[np.complex64] | None:
    """The additive RFI of one subband, shape (n_row, n_chan, n_pol), or None if there is none."""
    channels = plan.narrowband.get(subband, [])
    if not (channels or plan.burst_integrations or plan.bad_antennas):
        return None
    n_row = len(ant1)
    rfi = np.zeros((n_row, n_chan, n_pol), dtype=np.complex64)
    cross = ant1 != ant2
    if channels:
        # One emitter per channel: amplitude varies by baseline (log-normal), phase is fixed
        # per baseline and slowly wanders in time.
        n = int(cross.sum())
        for ch in channels:
            amp = config.narrowband_amplitude_jy * rng.lognormal(0.0, 0.5, n)
            phase = rng.uniform(0, 2 * np.pi, n) + 0.1 * time_index[cross] * rng.standard_normal()
            rfi[cross, ch, :] += (amp * np.exp(1j * phase))[:, None]
    for t in plan.burst_integrations:
        rows = cross & (time_index == t)
        n = int(rows.sum())
        amp = config.burst_amplitude_jy * rng.lognormal(0.0, 0.5, (n, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, n_chan, n_pol))
        rfi[rows] += amp * np.exp(1j * phase)
    if plan.bad_antennas:
        rows = np.isin(ant1, plan.bad_antennas) | np.isin(ant2, plan.bad_antennas)
        rfi[rows & ~cross] += config.bad_antenna_auto_power_jy  # its autos: excess power
        rows &= cross
        n = int(rows.sum())
        scale = config.bad_antenna_amplitude_jy / np.sqrt(2)
        rfi[rows] += scale * (rng.standard_normal((n, n_chan, n_pol))
                              + 1j * rng.standard_normal((n, n_chan, n_pol)))
    return rfi
