"""The flagging kernels' parameters."""

from __future__ import annotations

from dataclasses import dataclass


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
    array_outlier_sigma: float | None  # step 4
    mad_clip_sigma: float | None  # step 7
    extension_sigma: float | None
    mostly_flagged_fraction: float
