"""Stage ``calibrate_solve``: solve bandpass and gains on a block a calibrator transits.

Wraps :func:`contimg_dask.processing.calibrate_solve.solve_block` (the best calibrator of the
configured catalogue, unless the stage is given a catalogue or a calibrator); the solutions
store goes to the stage's ``out``, by default :func:`contimg_dask.stages.layout.solutions_path`.
Figures: the calibrator, its apparent flux, the reference antenna and the solutions' quality
(flagged fractions, median SNRs and reduced χ²), as recorded in the store's
``contimg.quality`` attribute, and each antenna's amplitude, phase and SNR
(:mod:`contimg_dask.stages.antenna_figures`) for the dashboard.

Raises :class:`~contimg_dask.errors.CalibrationError` on a block no calibrator transits:
the orchestrator asks :func:`~contimg_dask.science.calibrators.find_calibrators` first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from contimg_dask.config import PipelineConfig
from contimg_dask.io.store.solutions import read_solutions
from contimg_dask.ops.solution_summary import summarise_solutions
from contimg_dask.processing.calibrate_solve import solve_block
from contimg_dask.stages._running import on_client, stage_result
from contimg_dask.stages.antenna_figures import (
    SOLUTION_AMP,
    SOLUTION_PHASE,
    SOLUTION_SNR,
    antenna_figures,
)
from contimg_dask.stages.contract import BlockRef, Figure, StageResult
from contimg_dask.stages.layout import output_path, solutions_path

if TYPE_CHECKING:
    from dask.distributed import Client

QUALITY = ("bandpass_flagged_fraction", "bandpass_median_snr", "bandpass_median_chi2",
           "gain_flagged_fraction", "gain_median_snr", "gain_median_chi2")


def solution_figures(solutions: Path) -> dict[str, Figure]:
    """Each antenna's amplitude, phase (degrees) and SNR of the solutions store."""
    ds = read_solutions(solutions)
    summary = summarise_solutions(ds.GAIN_BLOCK.values, ds.GAIN_BLOCK_FLAG.values,
                                  ds.GAIN_BLOCK_SNR.values, ds.BANDPASS.values,
                                  ds.BANDPASS_FLAG.values)
    antennas = [str(a) for a in ds.antenna_name.values]
    return {**antenna_figures(SOLUTION_AMP, antennas, summary.amplitude),
            **antenna_figures(SOLUTION_PHASE, antennas, summary.phase_deg),
            **antenna_figures(SOLUTION_SNR, antennas, summary.snr)}


@dataclass(frozen=True)
class CalibrateSolveStage:
    """Flagged calibrator block -> solutions store.

    ``out`` is the solutions store to write (default: the layout's, its directory created);
    ``catalog`` a calibrator catalogue instead of ``calibration.catalog``; ``calibrator`` the
    name of the calibrator to solve on (default: the best candidate); ``overwrite`` replaces
    whatever is at ``out`` (by default only an earlier solutions store)."""

    name: ClassVar[str] = "calibrate_solve"
    needs: ClassVar[tuple[str, ...]] = ("flag",)

    out: Path | None = None
    catalog: Path | None = None
    calibrator: str | None = None
    overwrite: bool = False

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        t0 = time.perf_counter()
        out = self.out or output_path(solutions_path(block.block_id, config))
        with on_client(client):
            summary = solve_block(block.store, config, out, catalog=self.catalog,
                                  calibrator=self.calibrator, overwrite=self.overwrite)
        figures = {"calibrator": summary["calibrator"],
                   "calibrator_apparent_flux_jy": summary["calibrator_apparent_flux_jy"],
                   "refant": summary["refant"], **{k: summary[k] for k in QUALITY},
                   **solution_figures(out)}
        options = "".join(f" --{flag} {value}" for flag, value in
                          (("catalog", self.catalog), ("calibrator", self.calibrator))
                          if value is not None)
        inputs = [block.store] + ([self.catalog] if self.catalog else [])
        return stage_result(self.name, block, config, [("solutions", out)], inputs, figures,
                            t0, command=f"contimg calibrate solve {block.store} --out {out}"
                                        f"{options}")
