"""Stage ``rephase``: recompute the block's UVWs and rephase it to its default fixed centre
(HA 0 / pointing dec at the block's mid-time), as the ``rephased`` data group.

Wraps :func:`contimg_dask.processing.rephase.rephase_block`; the stage may be given another
ICRS centre and whether to store the rotated visibilities (default
``store.materialise_rephased``). Ingest does the same by default (``store.rephase_at_ingest``);
rerunning it rewrites the group with the same values. Figures: the centre (ICRS, deg) and
whether the visibilities were stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from contimg_dask.config import PipelineConfig
from contimg_dask.processing.rephase import rephase_block
from contimg_dask.stages._running import on_client, stage_result
from contimg_dask.stages.contract import BlockRef, StageResult

if TYPE_CHECKING:
    from dask.distributed import Client


@dataclass(frozen=True)
class RephaseStage:
    """Block store -> its ``rephased`` data group (fixed ICRS centre).

    ``centre_rad`` fixes the ICRS centre (RA, dec in radians; default: HA 0 / pointing dec at
    the block's mid-time); ``materialise`` overrides ``store.materialise_rephased``."""

    name: ClassVar[str] = "rephase"
    needs: ClassVar[tuple[str, ...]] = ("ingest",)

    centre_rad: tuple[float, float] | None = None
    materialise: bool | None = None

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        t0 = time.perf_counter()
        materialise = (config.store.materialise_rephased if self.materialise is None
                       else self.materialise)
        ra, dec = self.centre_rad or (None, None)
        with on_client(client):
            ra, dec = rephase_block(block.store, ra, dec, materialise=materialise)
        figures = {"ra_deg": float(np.degrees(ra)), "dec_deg": float(np.degrees(dec)),
                   "materialised": materialise}
        centre = (f" --ra {figures['ra_deg']!r} --dec {figures['dec_deg']!r}"
                  if self.centre_rad else "")
        how = "--materialise" if materialise else "--no-materialise"
        return stage_result(self.name, block, config, [("block_store", block.store)],
                            [block.store], figures, t0,
                            command=f"contimg rephase {block.store}{centre} {how}")
