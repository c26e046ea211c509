"""Data groups of a block store: stored, or derived on the fly by a phase rotation.

An MSv4 data group (the visibility dataset's ``data_groups`` attribute) names stored
variables. A block rephased without materialising (the default,
``store.materialise_rephased: false``) stores only what rephasing computes that is small,
its UVWs (``UVW_REPHASED``) and its field; its ``rephased`` group is recorded in
``contimg.derived_groups`` as the stored visibilities it is rotated from and the UVWs
they are phased for. Readers get either kind the same way:

- :func:`data_group` resolves a group name;
- :func:`group_visibilities` gives its visibilities as a lazy Dask array (one task per
  chunk of the stored ones);
- :class:`ChannelReader` reads all times and baselines of a channel slice, rotated, for
  streaming writers (one subband at a time, no Dask graph).

The rotation is :func:`contimg_dask.ops.phasing.rotate_by_path_difference`:
``V · exp(-2πi ν (w_new - w_old) / c)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from contimg_dask.errors import InputError
from contimg_dask.io.store.model import check_data_group
from contimg_dask.io.store.zarr_reads import read_channels
from contimg_dask.ops.phasing import rotate_by_path_difference


@dataclass(frozen=True)
class DataGroup:
    """One data group: the variable names of its roles (``correlated_data``, ``flag``,
    ``weight``, ``uvw``, ``field_and_source``, ...), and, for a derived group, the UVW
    variable its stored ``correlated_data`` are phased for (``rotated_from_uvw``)."""

    name: str
    names: dict[str, Any]

    @property
    def rotated_from_uvw(self) -> str | None:
        return self.names.get("rotated_from_uvw")

    @property
    def derived(self) -> bool:
        """Whether the visibilities are computed on the fly (not stored)."""
        return self.rotated_from_uvw is not None


def derived_groups(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The derived groups recorded in a visibility dataset's attributes."""
    return dict(attrs.get("contimg", {}).get("derived_groups", {}))


def group_names(attrs: dict[str, Any]) -> list[str]:
    """Every data group of the dataset, stored and derived."""
    return sorted(set(attrs.get("data_groups", {})) | set(derived_groups(attrs)))


def data_group(attrs: dict[str, Any], name: str, store: Path | None = None,
               stage: str | None = None, key: str | None = None,
               variables: Mapping[str, Any] | None = None) -> DataGroup:
    """The data group ``name`` of a visibility dataset (its ``attrs``); a stored group
    takes precedence over a derived one of the same name. The entry is checked against the
    data model (:data:`contimg_dask.io.store.model.DATA_GROUP`) and, given the dataset's
    ``variables``, must name variables that exist.

    Raises
    ------
    InputError
        The dataset has no such group (naming the groups it has);
        :class:`~contimg_dask.io.store.model.StoreModelError` its entry is malformed.
    """
    stored = attrs.get("data_groups", {})
    derived = derived_groups(attrs)
    entry = stored.get(name, derived.get(name))
    if entry is not None:
        return DataGroup(name, dict(check_data_group(entry, name, variables, store)))
    hint = "; run `contimg rephase` first" if name == "rephased" else ""
    raise InputError(f"block store has no data group '{name}' (has "
                     f"{group_names(attrs)}){hint}", file=store, stage=stage, key=key)


def rotation_path_difference(ds: xr.Dataset, group: DataGroup) -> np.ndarray | None:
    """``w_new - w_old`` (time, baseline; metres) of a derived group's rotation; None for a
    stored group."""
    if not group.derived:
        return None
    w_old = np.asarray(ds[group.rotated_from_uvw].values[..., 2], np.float64)
    w_new = np.asarray(ds[group.names["uvw"]].values[..., 2], np.float64)
    return w_new - w_old


def group_visibilities(ds: xr.Dataset, group: DataGroup) -> da.Array:
    """The group's visibilities (time, baseline, frequency, polarization) as a lazy Dask
    array: the stored array, or for a derived group its rotation, blockwise over the stored
    array's chunks."""
    vis = ds[group.names["correlated_data"]].data
    dw = rotation_path_difference(ds, group)
    if dw is None:
        return vis
    dw_d = da.from_array(dw, chunks=(vis.chunks[0], vis.chunks[1]))
    freq_d = da.from_array(ds.frequency.values, chunks=(vis.chunks[2],))
    return da.blockwise(rotate_by_path_difference, "tbfp", vis, "tbfp", dw_d, "tb", freq_d,
                        "f", dtype=vis.dtype)


class ChannelReader:
    """Reads a data group's visibilities one channel slice at a time (all times and
    baselines) straight from the zarr arrays of the MSv4 group at ``group_path``; ``dw`` is
    the group's :func:`rotation_path_difference` (None for a stored group)."""

    def __init__(self, group_path: Path, group: DataGroup, freq_hz: np.ndarray,
                 dw: np.ndarray | None) -> None:
        if group.derived and dw is None:
            raise ValueError(f"data group '{group.name}' is derived: its rotation is needed")
        self._array = zarr.open_array(group_path / group.names["correlated_data"], mode="r")
        self._freq = np.asarray(freq_hz, np.float64)
        self._dw = dw

    def read(self, channels: slice, conjugate: bool = False,
             out: np.ndarray | None = None) -> np.ndarray:
        """Visibilities of ``channels`` (complex64; their conjugate with ``conjugate``, as
        the Measurement Set stores them), rotated in place for a derived group; into
        ``out`` if given (a reused buffer, io/system/scratch.py)."""
        vis = read_channels(self._array, channels, out)
        if self._dw is None:
            return np.conj(vis, out=vis) if conjugate else vis
        return rotate_by_path_difference(vis, self._dw, self._freq[channels], out=vis,
                                         conjugate=conjugate)
