"""Stage ``export``: a data group of the block (default ``rephased``) as a Measurement Set (or
UVFITS, MIRIAD, UVH5), calibrated when calibration has been applied to it (CORRECTED_DATA).

Wraps :func:`contimg_dask.io.outputs.exports.export_block`; the product goes to the stage's
``out``, by default :func:`contimg_dask.stages.layout.ms_path` (other formats: the same name
with their suffix). Figures: the format, the data group, whether the data are calibrated, and
the product's size on disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from contimg_dask.config import PipelineConfig
from contimg_dask.errors import InputError
from contimg_dask.io.outputs.exports import PYUVDATA_FORMATS, export_block
from contimg_dask.io.store.block_calibration import read_block_calibration
from contimg_dask.io.store.block_view import open_block_view
from contimg_dask.stages._running import on_client, stage_result
from contimg_dask.stages.contract import BlockRef, StageResult
from contimg_dask.stages.layout import ms_path, output_path

if TYPE_CHECKING:
    from dask.distributed import Client

DATA_GROUP = "rephased"
SUFFIXES = {"ms": ".ms", "uvfits": ".uvfits", "miriad": ".uv", "uvh5": ".uvh5"}


def _size_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class ExportStage:
    """Block store -> Measurement Set (``fmt`` "ms", the default) or a pyuvdata format.

    ``out`` is the product's path (default: the layout's, its directory created);
    ``data_group`` the group exported; ``spw_layout`` the MS spectral windows (``per_subband``
    or ``single``); ``overwrite`` replaces whatever is at ``out`` (by default only a product
    of the same format)."""

    name: ClassVar[str] = "export"
    needs: ClassVar[tuple[str, ...]] = ("flag",)

    fmt: str = "ms"
    out: Path | None = None
    data_group: str = DATA_GROUP
    spw_layout: str = "per_subband"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.fmt != "ms" and self.fmt not in PYUVDATA_FORMATS:
            raise InputError(f"unknown export format {self.fmt!r} (ms, "
                             f"{', '.join(PYUVDATA_FORMATS)})", stage=self.name)

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        t0 = time.perf_counter()
        out = self.out or output_path(ms_path(block.block_id, config)
                                      .with_suffix(SUFFIXES[self.fmt]))
        with on_client(client):
            out = export_block(block.store, out, self.fmt, config,
                               data_group=self.data_group, spw_layout=self.spw_layout,
                               overwrite=self.overwrite)
        calibration = read_block_calibration(open_block_view(block.store).node)
        calibrated = calibration is not None and calibration.data_group == self.data_group
        figures = {"format": self.fmt, "data_group": self.data_group, "calibrated": calibrated,
                   "size_bytes": _size_bytes(out)}
        return stage_result(self.name, block, config, [(self.fmt, out)], [block.store],
                            figures, t0, command=f"contimg export {block.store} --format "
                                                 f"{self.fmt} --data-group {self.data_group} "
                                                 f"--spw-layout {self.spw_layout} --out {out}")
