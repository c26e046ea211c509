"""Per-antenna figures in a :class:`~contimg_dask.stages.contract.StageResult`: flat keys
``<prefix><antenna name>`` (figures are flat and JSON-ready), in the antennas' order.

- ``flag``: ``flagged_fraction_ant<NAME>``, the flagged fraction of the antenna's
  cross-correlations;
- ``calibrate_solve``: ``solution_amp_ant<NAME>``, ``solution_phase_deg_ant<NAME>`` and
  ``solution_snr_ant<NAME>`` (:mod:`contimg_dask.ops.solution_summary`; None where the antenna
  has no unflagged solution).

The orchestrator turns them into one compact event per block for the dashboard
(:func:`contimg_dask.pipeline.monitor.antenna_events`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from contimg_dask.stages.contract import Figure

FLAGGED = "flagged_fraction_ant"
SOLUTION_AMP = "solution_amp_ant"
SOLUTION_PHASE = "solution_phase_deg_ant"
SOLUTION_SNR = "solution_snr_ant"


def antenna_figures(prefix: str, antennas: Iterable[str], values: Iterable[float]
                    ) -> dict[str, Figure]:
    """``{prefix + antenna: value}``; NaN becomes None (JSON has no NaN)."""
    return {f"{prefix}{name}": (None if not math.isfinite(v) else float(v))
            for name, v in zip(antennas, values, strict=True)}


def antenna_values(figures: dict[str, Figure], prefix: str
                   ) -> tuple[list[str], list[float | None]]:
    """The antennas and values of ``prefix`` in ``figures`` (in the figures' order)."""
    names, values = [], []
    for key, value in figures.items():
        if key.startswith(prefix) and (value is None or (
                isinstance(value, int | float) and not isinstance(value, bool))):
            names.append(key.removeprefix(prefix))
            values.append(None if value is None else float(value))
    return names, values
