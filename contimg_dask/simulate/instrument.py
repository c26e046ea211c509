"""Instrumental corruptions: per-antenna complex gains and bandpasses.

The correlator convention is visibility = conj(E_ant1) · E_ant2, so an antenna voltage gain
g enters a visibility as ``conj(g[ant1]) * g[ant2]``. The gain of antenna a, polarization p,
at Unix time t and frequency ν is ``time_gain[a, t, p] * bandpass[a, ν, p]``.
The model is deterministic in the seed, so every block of a run sees the same instrument,
drifting slowly in phase from block to block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from contimg_dask.config.schema import InstrumentConfig


@dataclass(frozen=True)
class InstrumentModel:
    """Gain parameters per antenna number (0-based, all stations) and polarization."""

    amplitude: NDArray[np.float64]  # (n_ant, n_pol)
    phase_rad: NDArray[np.float64]  # (n_ant, n_pol) at reference_unix
    drift_rad_per_s: NDArray[np.float64]  # (n_ant, n_pol)
    delay_s: NDArray[np.float64]  # (n_ant, n_pol) residual delay
    ripple_amplitude: NDArray[np.float64]  # (n_ant, n_pol)
    ripple_period_hz: NDArray[np.float64]  # (n_ant, n_pol)
    ripple_phase_rad: NDArray[np.float64]  # (n_ant, n_pol)
    bandpass_slope_per_hz: NDArray[np.float64]  # (n_ant, n_pol)
    reference_unix: float
    reference_freq_hz: float

    def time_gains(self, unix_s: NDArray[np.float64]) -> NDArray[np.complex128]:
        """Frequency-independent gains, shape (n_ant, n_time, n_pol)."""
        dt = np.asarray(unix_s, float)[None, :, None] - self.reference_unix
        phase = self.phase_rad[:, None, :] + self.drift_rad_per_s[:, None, :] * dt
        return self.amplitude[:, None, :] * np.exp(1j * phase)

    def bandpass(self, freq_hz: NDArray[np.float64]) -> NDArray[np.complex128]:
        """Bandpass, shape (n_ant, n_freq, n_pol), mean amplitude ~1."""
        dnu = np.asarray(freq_hz, float)[None, :, None] - self.reference_freq_hz
        amp = (1.0 + self.ripple_amplitude[:, None, :]
               * np.sin(2 * np.pi * dnu / self.ripple_period_hz[:, None, :]
                        + self.ripple_phase_rad[:, None, :])
               + self.bandpass_slope_per_hz[:, None, :] * dnu)
        phase = 2 * np.pi * dnu * self.delay_s[:, None, :]
        return amp * np.exp(1j * phase)


def draw_instrument(seed: int, n_ant: int, n_pol: int, reference_unix: float,
                    reference_freq_hz: float, config: InstrumentConfig) -> InstrumentModel:
    """Draw a random instrument from ``config`` (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 104729])
    shape = (n_ant, n_pol)
    return InstrumentModel(
        amplitude=np.clip(1.0 + config.gain_amplitude_sd * rng.standard_normal(shape), 0.2, None),
        phase_rad=np.radians(config.gain_phase_sd_deg) * rng.standard_normal(shape),
        drift_rad_per_s=np.radians(config.gain_phase_drift_deg_per_hour) / 3600.0
        * rng.standard_normal(shape),
        delay_s=config.residual_delay_sd_ns * 1e-9 * rng.standard_normal(shape),
        ripple_amplitude=config.bandpass_ripple * rng.random(shape),
        ripple_period_hz=rng.uniform(20e6, 80e6, shape),
        ripple_phase_rad=rng.uniform(0, 2 * np.pi, shape),
        bandpass_slope_per_hz=config.bandpass_ripple / 100e6 * rng.standard_normal(shape),
        reference_unix=reference_unix,
        reference_freq_hz=reference_freq_hz,
    )


def perfect_instrument(n_ant: int, n_pol: int, reference_unix: float,
                       reference_freq_hz: float) -> InstrumentModel:
    """Unit gains and flat bandpasses (for convention tests)."""
    zeros = np.zeros((n_ant, n_pol))
    return InstrumentModel(
        amplitude=np.ones((n_ant, n_pol)), phase_rad=zeros, drift_rad_per_s=zeros,
        delay_s=zeros, ripple_amplitude=zeros, ripple_period_hz=np.ones((n_ant, n_pol)),
        ripple_phase_rad=zeros, bandpass_slope_per_hz=zeros,
        reference_unix=reference_unix, reference_freq_hz=reference_freq_hz)
