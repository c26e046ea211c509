"""One opener for a block store: the view every stage and reader works on.

:func:`open_block_view` opens the store lazily (Dask arrays, as
``xradio.open_processing_set`` does), finds its MSv4 node, reads the node's attributes as
stored (what an attribute update must start from), resolves a data group (checked against
the data model, :mod:`contimg_dask.io.store.model`) and gives the block's geometry on first
use. :func:`fixed_centre_group` adds the group's fixed phase centre, which exports need.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import dask.array as da
import xarray as xr
import zarr

from contimg_dask.errors import InputError
from contimg_dask.io.store.block_geometry import BlockGeometry, geometry_of
from contimg_dask.io.store.block_store import block_node, open_block
from contimg_dask.io.store.data_groups import DataGroup, data_group, group_visibilities


@dataclass(frozen=True)
class BlockView:
    """An opened block store: its MSv4 node ``name`` (lazy), the visibility ``dataset``, the
    node's ``attrs`` as stored, and the ``data_group`` worked on (None if none asked for)."""

    store: Path
    name: str
    node: xr.DataTree
    dataset: xr.Dataset
    attrs: dict[str, Any]
    data_group: DataGroup | None

    @property
    def group_path(self) -> Path:
        """The zarr group of the MSv4 node."""
        return self.store / self.name

    @property
    def provenance(self) -> dict[str, Any]:
        """Our ``contimg`` attribute: block id, subbands, flag versions, calibration, ..."""
        return self.attrs["contimg"]

    @property
    def names(self) -> dict[str, Any]:
        """The data group's variable names (correlated_data, flag, weight, uvw, ...)."""
        if self.data_group is None:
            raise ValueError(f"{self.store}: opened without a data group")
        return self.data_group.names

    @property
    def visibilities(self) -> da.Array:
        """The data group's visibilities, lazily (stored, or rotated on the fly)."""
        return group_visibilities(self.dataset, self.data_group)

    def with_data_group(self, name: str, *, stage: str | None = None,
                        key: str | None = None) -> BlockView:
        """The same view with data group ``name`` (checked as :func:`open_block_view`
        does)."""
        group = data_group(self.attrs, name, self.store, stage, key,
                           variables=self.dataset.variables)
        return replace(self, data_group=group)

    @cached_property
    def geometry(self) -> BlockGeometry:
        """Times, site, baselines, antennas, pointing and frequencies (read once)."""
        return geometry_of(self.node, self.store)


def open_block_view(store: str | Path, data_group_name: str | None = None, *,
                    stage: str | None = None, key: str | None = None) -> BlockView:
    """Open ``store`` lazily, with its data group ``data_group_name`` if given.

    Raises
    ------
    InputError
        Not a block store, not ingested by us (no provenance), or no such data group
        (``key``: the configuration key that named it); a malformed group entry raises
        :class:`~contimg_dask.io.store.model.StoreModelError`.
    """
    store = Path(store)
    tree = open_block(store)
    name = next(iter(tree.children))
    node = block_node(tree)
    dataset = node.to_dataset(inherit=False)
    attrs = dict(zarr.open_group(store / name, mode="r").attrs)
    if "contimg" not in attrs:
        raise InputError("block store has no contimg provenance (not ingested by us)",
                         file=store, stage=stage)
    view = BlockView(store, name, node, dataset, attrs, None)
    if data_group_name is None:
        return view
    return view.with_data_group(data_group_name, stage=stage, key=key)


def read_geometry(store: str | Path) -> BlockGeometry:
    """Open a block store and read its geometry."""
    return open_block_view(store).geometry


@dataclass(frozen=True)
class FixedCentreGroup:
    """A data group of a block store whose phase centre is one fixed ICRS direction."""

    block: BlockView
    field_name: str
    ra_rad: float
    dec_rad: float


def fixed_centre_group(store: Path, data_group_name: str) -> FixedCentreGroup:
    """Open ``data_group_name`` of a block store for export.

    Raises
    ------
    InputError
        The store lacks the group, or its phase centre moves (exports need a fixed one).
    """
    view = open_block_view(store, data_group_name, stage="export")
    field = view.node[view.names["field_and_source"]].to_dataset(inherit=False)
    if "time" in field.FIELD_PHASE_CENTER_DIRECTION.dims:
        raise InputError(f"data group '{data_group_name}' has a moving phase centre; exports "
                         "need a fixed one (rephase first)", file=store, stage="export")
    ra, dec = (float(v) for v in field.FIELD_PHASE_CENTER_DIRECTION.values[0])
    return FixedCentreGroup(view, str(field.field_name.values[0]), ra, dec)
