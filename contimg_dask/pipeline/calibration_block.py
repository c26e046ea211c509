"""A block store opened for calibration: the data group worked on and the block's geometry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import xarray as xr

from contimg_dask.io.store.block_geometry import BlockGeometry, geometry_of
from contimg_dask.io.store.block_store import block_node, open_block
from contimg_dask.io.store.data_groups import DataGroup, data_group, group_visibilities


@dataclass(frozen=True)
class CalibrationBlock:
    """An opened block store and the data group calibration works on."""

    store: Path
    name: str
    node: xr.DataTree
    dataset: xr.Dataset
    data_group: DataGroup
    geometry: BlockGeometry

    @property
    def group(self) -> dict[str, str]:
        """The group's variable names (correlated_data, flag, weight, uvw, ...)."""
        return self.data_group.names

    @property
    def visibilities(self) -> da.Array:
        """The group's visibilities, lazily (stored, or rotated on the fly)."""
        return group_visibilities(self.dataset, self.data_group)


def open_calibration_block(store: str | Path, data_group_name: str, stage: str
                           ) -> CalibrationBlock:
    """Open ``store`` lazily with its data group ``data_group_name`` and geometry.

    Raises
    ------
    InputError
        The store is not a block store, or lacks the data group (not rephased yet).
    """
    store = Path(store)
    tree = open_block(store)
    node = block_node(tree)
    ds = node.to_dataset(inherit=False)
    group = data_group(ds.attrs, data_group_name, store, stage, key="calibration.data_group")
    return CalibrationBlock(store, next(iter(tree.children)), node, ds, group,
                            geometry_of(node, store))
