"""Stage ``calibrate_solve``: solve bandpass and gains on a block a calibrator transits.

Wraps :func:`contimg_dask.processing.calibrate_solve.solve_block` (best calibrator of the
configured catalogue); the solutions store goes to
:func:`contimg_dask.stages.layout.solutions_path`. Figures: the calibrator, its apparent flux,
the reference antenna and the solutions' quality (flagged fractions, median SNRs and reduced
χ²), as recorded in the store's ``contimg.quality`` attribute.

Raises :class:`~contimg_dask.errors.CalibrationError` on a block no calibrator transits:
the orchestrator asks :func:`~contimg_dask.processing.calibrate_solve.find_calibrators` first.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from contimg_dask.config import PipelineConfig
from contimg_dask.processing.calibrate_solve import solve_block
from contimg_dask.stages._running import on_client, stage_result
from contimg_dask.stages.contract import BlockRef, StageResult
from contimg_dask.stages.layout import solutions_path

if TYPE_CHECKING:
    from dask.distributed import Client

QUALITY = ("bandpass_flagged_fraction", "bandpass_median_snr", "bandpass_median_chi2",
           "gain_flagged_fraction", "gain_median_snr", "gain_median_chi2")


class CalibrateSolveStage:
    """Flagged calibrator block -> solutions store."""

    name: ClassVar[str] = "calibrate_solve"
    needs: ClassVar[tuple[str, ...]] = ("flag",)

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        t0 = time.perf_counter()
        out = solutions_path(block.block_id, config)
        out.parent.mkdir(parents=True, exist_ok=True)
        with on_client(client):
            summary = solve_block(block.store, config, out)
        figures = {"calibrator": summary["calibrator"],
                   "calibrator_apparent_flux_jy": summary["calibrator_apparent_flux_jy"],
                   "refant": summary["refant"], **{k: summary[k] for k in QUALITY}}
        return stage_result(self.name, block, config, [("solutions", out)], [block.store],
                            figures, t0,
                            command=f"contimg calibrate solve {block.store} --out {out}")
