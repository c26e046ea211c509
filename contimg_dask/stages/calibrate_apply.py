"""Stage ``calibrate_apply``: apply calibration solutions to a block.

Wraps :func:`contimg_dask.processing.calibrate_apply.apply_solutions` (on the fly, or
materialised: the stage's ``materialise``, default ``calibration.materialise_corrected``).
The solutions are the ones given to the stage, or else, by convention, the store under
:func:`contimg_dask.stages.layout.solutions_dir` that is applicable to the block (same
declination strip within ``calibration.dec_tolerance_deg``, within
``calibration.validity_days``) and nearest to it in time. Figures: the fraction of the data
the solutions flag and which solutions were applied, as recorded in the store's
``contimg.calibration`` attribute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import zarr

from contimg_dask.config import PipelineConfig
from contimg_dask.errors import CalibrationError
from contimg_dask.io.store.block_geometry import BlockGeometry
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.processing.calibrate_apply import apply_solutions
from contimg_dask.stages._running import on_client, stage_result
from contimg_dask.stages.contract import BlockRef, StageResult
from contimg_dask.stages.layout import solutions_dir

if TYPE_CHECKING:
    from dask.distributed import Client


def _distance_s(path: Path, geometry: BlockGeometry, config: PipelineConfig) -> float | None:
    """Seconds between the block and the solutions' block, None if not applicable."""
    try:
        prov = zarr.open_group(path, mode="r").attrs["contimg"]
    except (OSError, KeyError, ValueError):
        return None
    cal = config.calibration
    ddec = np.degrees(abs(geometry.pointing_dec_rad - prov["pointing_dec_rad"]))
    distance = abs(geometry.mid_unix - 0.5 * (prov["block_start_unix"]
                                              + prov["block_end_unix"]))
    if ddec > cal.dec_tolerance_deg or distance > cal.validity_days * 86400.0:
        return None
    return distance


def choose_solutions(block: BlockRef, config: PipelineConfig) -> Path:
    """The applicable solutions store nearest in time to ``block`` (see the module docstring).

    Raises
    ------
    CalibrationError
        None of the stores in the solutions directory applies to the block.
    """
    directory = solutions_dir(config)
    geometry = read_geometry(block.store)
    scored = [(d, path) for path in sorted(directory.glob("*.zarr"))
              if (d := _distance_s(path, geometry, config)) is not None]
    if not scored:
        raise CalibrationError(
            f"no solutions in {directory} apply to this block (same declination strip, "
            "within calibration.validity_days): solve a calibrator block of the strip first",
            file=block.store, block=block.block_id, stage="calibrate_apply")
    return min(scored)[1]


@dataclass(frozen=True)
class CalibrateApplyStage:
    """Block store + solutions store -> the block's calibration node (and, materialised, the
    ``corrected`` data group). ``solutions`` fixes the solutions store to apply;
    ``materialise`` overrides ``calibration.materialise_corrected``."""

    name: ClassVar[str] = "calibrate_apply"
    needs: ClassVar[tuple[str, ...]] = ("flag",)

    solutions: Path | None = None
    materialise: bool | None = None

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        t0 = time.perf_counter()
        solutions = self.solutions or choose_solutions(block, config)
        with on_client(client):
            summary = apply_solutions(block.store, solutions, config,
                                      materialise=self.materialise)
        figures = {"flagged_fraction": summary["flagged_fraction"],
                   "materialised": summary["materialised"],
                   "solutions_block": summary["solutions_block"]}
        how = "--materialise" if summary["materialised"] else "--no-materialise"
        return stage_result(self.name, block, config, [("block_store", block.store)],
                            [block.store, solutions], figures, t0,
                            command=f"contimg calibrate apply {block.store} "
                                    f"--solutions {solutions} {how}")
