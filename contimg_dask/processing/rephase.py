"""Stage: recompute UVWs and rephase every integration of a block to one fixed ICRS centre.

Adds the data group ``rephased`` beside ``base``; the original data are kept. The UVWs
(UVW_REPHASED) and the field (field_and_source_rephased_xds) are small, computed eagerly
and stored. By default the visibilities are not: the group is derived, its visibilities
the base ones rotated on the fly by whoever reads them (io/store/data_groups.py: a Dask graph,
or one subband at a time in the Measurement Set writer). Materialised, the rotation is a
Dask graph over the store's chunks writing VISIBILITY_REPHASED. The group is registered
last, so an interrupted run leaves nothing visible and a rerun replaces it.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from contimg_dask.coords.time import unix_to_jd
from contimg_dask.io.store.block_store import (
    REPHASED_FIELD_NODE,
    field_static_dataset,
    quiet_zarr_strings,
    rephased_data_group,
    with_rephased_group,
)
from contimg_dask.io.store.block_view import open_block_view
from contimg_dask.io.store.data_groups import DataGroup, group_visibilities
from contimg_dask.io.store.metadata import consolidate, store_lock, update_group_attrs
from contimg_dask.logs import get_logger, log_context
from contimg_dask.ops.phasing import block_centre, uvw_to_fixed_centre

log = get_logger(__name__)


def default_centre(node: xr.DataTree) -> tuple[float, float]:
    """ICRS (ra, dec) of the recorded phasing at the block's mid-time (see
    :func:`contimg_dask.ops.phasing.block_centre`)."""
    ds = node.to_dataset(inherit=False)
    prov = ds.attrs["contimg"]
    centre, site = prov["phase_centre"], prov["telescope_location_wgs84"]
    return block_centre(centre["kind"], centre["dec_rad"], centre["ra_rad"],
                        unix_to_jd(ds.time.values), site["longitude_rad"],
                        site["latitude_rad"], site["height_m"])


def rephase_block(store: str | Path, ra_rad: float | None = None,
                  dec_rad: float | None = None, materialise: bool = False
                  ) -> tuple[float, float]:
    """Rephase the block store to ICRS (``ra_rad``, ``dec_rad``) (default:
    :func:`default_centre`); with ``materialise`` also write the rotated visibilities.
    Returns the centre used."""
    t0 = time.perf_counter()
    view = open_block_view(store, stage="rephase")
    store, node, ds, prov = view.store, view.node, view.dataset, view.provenance
    with log_context(block=prov["block_id"], stage="rephase"):
        if ra_rad is None or dec_rad is None:
            ra_rad, dec_rad = default_centre(node)
        geometry = view.geometry
        uvw_new = uvw_to_fixed_centre(geometry.baselines_local_m, geometry.jd, ra_rad, dec_rad,
                                      *geometry.site)
        name = view.name
        base = view.attrs["data_groups"]["base"]
        variables = {"UVW_REPHASED": (ds.UVW.dims, uvw_new, dict(ds.UVW.attrs))}
        encoding = {}
        if materialise:
            # The derived group's rotation, computed and stored: a Dask graph, one task per
            # chunk of the base visibilities.
            derived = DataGroup("rephased", rephased_data_group(base, ra_rad, dec_rad, False))
            ds_new = ds.assign(UVW_REPHASED=variables["UVW_REPHASED"])
            variables["VISIBILITY_REPHASED"] = (
                ds.VISIBILITY.dims, group_visibilities(ds_new, derived),
                dict(ds.VISIBILITY.attrs))
            # A rerun (or a store rephased at ingest) overwrites the array in place, with
            # the codecs and chunks it already has.
            if not (store / name / "VISIBILITY_REPHASED").is_dir():
                zarr_chunks = zarr.open_array(store / name / "VISIBILITY", mode="r").chunks
                encoding["VISIBILITY_REPHASED"] = {"compressors": None, "chunks": zarr_chunks}
        field_name = f"rephased_{prov['block_id']}"

        def write() -> None:
            with warnings.catch_warnings():
                quiet_zarr_strings()
                xr.Dataset(variables).to_zarr(store, group=name, mode="a", zarr_format=3,
                                              consolidated=False, write_empty_chunks=True,
                                              encoding=encoding)
                field_static_dataset(ra_rad, dec_rad, field_name).to_zarr(
                    store, group=f"{name}/{REPHASED_FIELD_NODE}", mode="w", zarr_format=3,
                    consolidated=False)

        # xarray's append mode resets the group's attributes: the write runs under the
        # store's lock, between reading the attributes and storing them again.
        with store_lock(store):
            update_group_attrs(store, name, lambda attrs: with_rephased_group(
                attrs, rephased_data_group(attrs["data_groups"]["base"], ra_rad, dec_rad,
                                           materialise)), write=write)
            if not materialise and (store / name / "VISIBILITY_REPHASED").is_dir():
                # Rotated for an earlier centre and no longer referenced.
                shutil.rmtree(store / name / "VISIBILITY_REPHASED")
                consolidate(store)
        log.info("rephased to ICRS (%.5f, %.5f) deg in %.1f s (%s)", np.degrees(ra_rad),
                 np.degrees(dec_rad), time.perf_counter() - t0,
                 "materialised" if materialise else "visibilities rotated on the fly")
    return ra_rad, dec_rad
