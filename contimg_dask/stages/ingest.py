"""Stage ``ingest``: a block's UVH5 subband files to its zarr block store (``BlockRef.store``).

Wraps :func:`contimg_dask.io.ingest.ingest_block`; with ``store.rephase_at_ingest`` the store
also gets the ``rephased`` data group in the same pass. Figures: the subbands written and
missing, and the store's shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from contimg_dask.config import PipelineConfig
from contimg_dask.errors import InputError
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.store.block_view import open_block_view
from contimg_dask.stages._running import on_client, stage_result
from contimg_dask.stages.contract import BlockRef, StageResult

if TYPE_CHECKING:
    from dask.distributed import Client


@dataclass(frozen=True)
class IngestStage:
    """UVH5 subband files -> block store (replaced atomically). ``overwrite`` also replaces
    whatever else is at ``BlockRef.store`` (by default only an earlier block store)."""

    name: ClassVar[str] = "ingest"
    needs: ClassVar[tuple[str, ...]] = ()

    overwrite: bool = False

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        t0 = time.perf_counter()
        if not block.files:
            raise InputError("ingest needs the block's subband files (BlockRef.files is "
                             "empty)", file=block.store, block=block.block_id, stage=self.name)
        with on_client(client):
            ingest_block(list(block.files), block.store, config, block.block_id,
                         overwrite=self.overwrite)
        view = open_block_view(block.store, stage=self.name)
        ds, prov = view.dataset, view.provenance
        n_t, n_bl, n_f, n_p = ds.VISIBILITY.shape
        figures = {"subbands": len(prov["subbands"]) - len(prov["missing_subbands"]),
                   "missing_subbands": len(prov["missing_subbands"]), "times": n_t,
                   "baselines": n_bl, "channels": n_f, "polarizations": n_p,
                   "rephased": "rephased" in ds.attrs["data_groups"]
                   or "rephased" in prov.get("derived_groups", {})}
        return stage_result(self.name, block, config, [("block_store", block.store)],
                            list(block.files), figures, t0,
                            command=f"contimg ingest {' '.join(map(str, block.files))} "
                                    f"--block {block.block_id} --out {block.store}")
