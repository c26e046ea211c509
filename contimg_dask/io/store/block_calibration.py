"""The calibration applied to a block store, kept on the block's own grid.

``contimg calibrate apply`` writes the node ``<msv4>/calibration_xds``: the gains of the
block's integrations and the bandpass of its channels, already interpolated from the
solutions store (convention V_ab = conj(g_a) g_b M_ab, g = GAIN(t) BANDPASS(ν); NaN where a
solution is flagged):

    GAIN      (time, antenna_name, polarization)       complex128
    BANDPASS  (frequency, antenna_name, polarization)  complex128

with the data group it corrects and the solutions' provenance in its attributes. The
corrected data are then either materialised as the data group ``corrected`` or computed on
the fly from these arrays by whoever reads them (:func:`corrected_dataset`, the MS writer):
a Dask graph of one task per subband chunk, nothing written.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from contimg_dask.io.store.block_store import quiet_zarr_strings
from contimg_dask.io.store.block_view import open_block_view
from contimg_dask.io.store.metadata import replace_node
from contimg_dask.io.store.model import CALIBRATION_NODE as CALIBRATION_MODEL
from contimg_dask.ops.calibration import apply_gains

CALIBRATION_NODE = "calibration_xds"


@dataclass(frozen=True)
class BlockCalibration:
    """Gains on a block's grid; antennas in the order of its antenna_xds."""

    gain_t: np.ndarray  # (time, antenna, polarization) complex128, NaN where flagged
    bandpass: np.ndarray  # (frequency, antenna, polarization)
    data_group: str  # the group it corrects
    attrs: dict[str, Any]


def write_block_calibration(store: Path, name: str, antennas: list[str], dataset: xr.Dataset,
                            gain_t: np.ndarray, bandpass: np.ndarray,
                            attrs: dict[str, Any]) -> None:
    """Write (replace) the calibration node of the MSv4 node ``name`` (checked against
    :data:`contimg_dask.io.store.model.CALIBRATION_NODE`): readers see the old node or the
    new one (io/store/metadata.py ``replace_node``)."""
    node = CALIBRATION_MODEL.build(
        coords={"time": dataset.time.values, "frequency": dataset.frequency.values,
                "antenna_name": np.array(antennas),
                "polarization": dataset.polarization.values},
        data_vars={"GAIN": gain_t, "BANDPASS": bandpass}, attrs=attrs,
        where=store / name / CALIBRATION_NODE)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            quiet_zarr_strings()
            node.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)

    replace_node(store, f"{name}/{CALIBRATION_NODE}", write)


def read_block_calibration(node: xr.DataTree) -> BlockCalibration | None:
    """The calibration of an opened block (its MSv4 node), or None."""
    if CALIBRATION_NODE not in node.children:
        return None
    # Coordinates equal to the block's (time, frequency, polarization) are inherited.
    ds = node[CALIBRATION_NODE].to_dataset().load()
    CALIBRATION_MODEL.check(ds, f"{node.path}/{CALIBRATION_NODE}")
    return BlockCalibration(ds.GAIN.values.astype(np.complex128),
                            ds.BANDPASS.values.astype(np.complex128),
                            ds.attrs["data_group"], dict(ds.attrs))


def corrected_dataset(store: str | Path) -> xr.Dataset:
    """The block's corrected visibilities, weights and flags as lazy Dask arrays, computed
    from its data group and calibration node: one task per subband chunk applies the gains
    and gives all three.

    Raises
    ------
    ValueError
        The block has no calibration applied.
    """
    block = open_block_view(store)
    calibration = read_block_calibration(block.node)
    if calibration is None:
        raise ValueError(f"{store}: no calibration applied (run `contimg calibrate apply`)")
    block = block.with_data_group(calibration.data_group)
    ds, names = block.dataset, block.names
    ant1, ant2 = block.geometry.ant1, block.geometry.ant2
    vis = block.visibilities
    if len(vis.chunks[1]) != 1:
        vis = vis.rechunk({1: -1})
    weight = ds[names["weight"]].data.rechunk(vis.chunks)
    flag = ds[names["flag"]].data.rechunk(vis.chunks)
    gains = da.from_array(calibration.gain_t, chunks=(vis.chunks[0], -1, -1))
    bandpass = da.from_array(calibration.bandpass, chunks=(vis.chunks[2], -1, -1))
    dims = ds[names["correlated_data"]].dims
    # One task per chunk applies the kernel and holds its three outputs; each variable takes
    # its part of them (the kernel runs once per chunk, whichever variables are computed).
    chunk_outputs = da.blockwise(
        _corrected_chunk, "tbfp", vis, "tbfp", weight, "tbfp", flag, "tbfp", gains, "tap",
        bandpass, "fap", concatenate=True, meta=np.empty((0, 0, 0, 0), object), ant1=ant1,
        ant2=ant2)
    arrays = {name: (dims, chunk_outputs.map_blocks(operator.getitem, part, dtype=dtype,
                                                    meta=np.empty((0, 0, 0, 0), dtype)))
              for part, (name, dtype) in enumerate((("VISIBILITY_CORRECTED", np.complex64),
                                                    ("WEIGHT_CORRECTED", np.float32),
                                                    ("FLAG_CORRECTED", bool)))}
    return xr.Dataset(arrays, coords=ds[names["correlated_data"]].coords,
                      attrs={"calibration": calibration.attrs})


def _corrected_chunk(vis: np.ndarray, weight: np.ndarray, flag: np.ndarray,
                     gain_t: np.ndarray, bandpass: np.ndarray, ant1: np.ndarray,
                     ant2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chunk's corrected visibilities, weights and flags."""
    return apply_gains(vis, weight, flag, gain_t, bandpass, ant1, ant2)
