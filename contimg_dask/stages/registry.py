"""The stages by name, in the order a block goes through them.

The orchestrator runs ``STAGES[name].run(block, config, client=client)``; each stage's
``needs`` names the stages whose products on the same block it needs first. Calibration
also needs solutions solved on a calibrator block of the strip (``calibrate_solve`` on that
block, found by :func:`contimg_dask.stages.calibrate_apply.choose_solutions`).
"""

from __future__ import annotations

from contimg_dask.errors import ContimgError
from contimg_dask.stages.calibrate_apply import CalibrateApplyStage
from contimg_dask.stages.calibrate_solve import CalibrateSolveStage
from contimg_dask.stages.contract import Stage
from contimg_dask.stages.export import ExportStage
from contimg_dask.stages.flag import FlagStage
from contimg_dask.stages.image import ImageStage
from contimg_dask.stages.ingest import IngestStage
from contimg_dask.stages.mosaic import MosaicStage
from contimg_dask.stages.photometry import PhotometryStage
from contimg_dask.stages.rephase import RephaseStage

STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    IngestStage(), RephaseStage(), FlagStage(), CalibrateSolveStage(), CalibrateApplyStage(),
    ExportStage(), ImageStage(), MosaicStage(), PhotometryStage())}


def get_stage(name: str) -> Stage:
    """The stage called ``name``.

    Raises
    ------
    ContimgError
        No stage has that name (the known names are listed).
    """
    try:
        return STAGES[name]
    except KeyError:
        raise ContimgError(f"no stage {name!r} (stages: {', '.join(STAGES)})") from None
