"""A block store opened for calibration: the data group worked on and the block's geometry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from contimg_dask.errors import InputError
from contimg_dask.io.block_geometry import BlockGeometry, geometry_of
from contimg_dask.io.block_store import block_node, open_block


@dataclass(frozen=True)
class CalibrationBlock:
    """An opened block store and the data group calibration works on."""

    store: Path
    name: str
    node: xr.DataTree
    dataset: xr.Dataset
    group: dict[str, str]
    geometry: BlockGeometry


def open_calibration_block(store: str | Path, data_group: str, stage: str
                           ) -> CalibrationBlock:
    """Open ``store`` lazily with its ``data_group`` and geometry.

    Raises
    ------
    InputError
        The store is not a block store, or lacks the data group (not rephased yet).
    """
    store = Path(store)
    tree = open_block(store)
    node = block_node(tree)
    ds = node.to_dataset(inherit=False)
    groups = ds.attrs["data_groups"]
    if data_group not in groups:
        raise InputError(f"block store has no data group '{data_group}' (has "
                         f"{sorted(groups)}); run `contimg rephase` first", file=store,
                         stage=stage, key="calibration.data_group")
    return CalibrationBlock(store, next(iter(tree.children)), node, ds,
                            dict(groups[data_group]), geometry_of(node, store))
