"""Stage ``flag``: flag the block store (static and RFI flags) as the flag version ``rfi``.

Wraps :func:`contimg_dask.processing.flag.flag_block` (the version's name is the stage's
``version``, default ``rfi``). Figures: the flagged fraction of the
block's cross-correlations, of each subband (``flagged_fraction_sbNN``) and of each antenna
(``flagged_fraction_ant<NAME>``, :mod:`contimg_dask.stages.antenna_figures`), as stored with
the version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from contimg_dask.config import PipelineConfig
from contimg_dask.processing.flag import flag_block
from contimg_dask.stages._running import on_client, stage_result
from contimg_dask.stages.antenna_figures import FLAGGED, antenna_figures
from contimg_dask.stages.contract import BlockRef, StageResult

if TYPE_CHECKING:
    from dask.distributed import Client

FLAG_VERSION = "rfi"


@dataclass(frozen=True)
class FlagStage:
    """Block store -> flag version ``version`` (default ``rfi``), made active."""

    name: ClassVar[str] = "flag"
    needs: ClassVar[tuple[str, ...]] = ("ingest",)

    version: str = FLAG_VERSION

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        t0 = time.perf_counter()
        with on_client(client):
            fractions = flag_block(block.store, config.flagging, version=self.version)
        figures = {"flag_version": self.version, "flagged_fraction": fractions["block"],
                   **{f"flagged_fraction_sb{sb}": value
                      for sb, value in fractions["per_subband"].items()},
                   **antenna_figures(FLAGGED, fractions["per_antenna"],
                                     fractions["per_antenna"].values())}
        return stage_result(self.name, block, config, [("block_store", block.store)],
                            [block.store], figures, t0,
                            command=f"contimg flag {block.store} --version {self.version}")
