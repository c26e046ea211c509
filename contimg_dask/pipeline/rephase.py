"""Stage: recompute UVWs and rephase every integration of a block to one fixed ICRS centre.

Adds the data group ``rephased`` (VISIBILITY_REPHASED, UVW_REPHASED,
field_and_source_rephased_xds) beside ``base``; the original data are kept. The visibility
rotation is a Dask graph over the store's chunks (one task per subband chunk); the UVWs are
small and computed eagerly. The data group is registered last, so an interrupted run leaves
nothing visible and a rerun replaces it.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from contimg_dask.coords.time import unix_to_jd
from contimg_dask.errors import InputError
from contimg_dask.io.block_geometry import geometry_of
from contimg_dask.io.block_store import (
    REPHASED_FIELD_NODE,
    block_node,
    field_static_dataset,
    open_block,
    quiet_zarr_strings,
    rephased_data_group,
)
from contimg_dask.logs import get_logger, log_context
from contimg_dask.ops.phasing import block_centre, rotate_visibilities, uvw_to_fixed_centre

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
                  dec_rad: float | None = None) -> tuple[float, float]:
    """Rephase the block store to ICRS (``ra_rad``, ``dec_rad``) (default:
    :func:`default_centre`). Returns the centre used."""
    t0 = time.perf_counter()
    store = Path(store)
    tree = open_block(store)
    node = block_node(tree)
    ds = node.to_dataset(inherit=False)
    prov = ds.attrs.get("contimg")
    if prov is None:
        raise InputError("block store has no contimg provenance (not ingested by us)",
                         file=store, stage="rephase")
    with log_context(block=prov["block_id"], stage="rephase"):
        if ra_rad is None or dec_rad is None:
            ra_rad, dec_rad = default_centre(node)
        geometry = geometry_of(node, store)
        uvw_new = uvw_to_fixed_centre(geometry.baselines_local_m, geometry.jd, ra_rad, dec_rad,
                                      *geometry.site)
        w_old = ds.UVW.values[..., 2]
        freq = ds.frequency.values

        vis = ds.VISIBILITY.data
        freq_d = da.from_array(freq, chunks=(vis.chunks[2],))
        w_old_d = da.from_array(w_old, chunks=(vis.chunks[0], vis.chunks[1]))
        w_new_d = da.from_array(uvw_new[..., 2], chunks=(vis.chunks[0], vis.chunks[1]))
        rotated = da.blockwise(rotate_visibilities, "tbfp", vis, "tbfp", w_old_d, "tb",
                               w_new_d, "tb", freq_d, "f", dtype=vis.dtype)

        name = next(iter(tree.children))
        new = xr.Dataset({
            "VISIBILITY_REPHASED": (ds.VISIBILITY.dims, rotated, dict(ds.VISIBILITY.attrs)),
            "UVW_REPHASED": (ds.UVW.dims, uvw_new, dict(ds.UVW.attrs)),
        })
        field_name = f"rephased_{prov['block_id']}"
        attrs = dict(zarr.open_group(store / name, mode="r").attrs)
        with warnings.catch_warnings():
            quiet_zarr_strings()
            # xarray's append mode resets the group's attributes: they are restored below.
            zarr_chunks = zarr.open_array(store / name / "VISIBILITY", mode="r").chunks
            # A rerun (or a store rephased at ingest) overwrites the arrays in place, with
            # the codecs and chunks they already have.
            exists = (store / name / "VISIBILITY_REPHASED").is_dir()
            encoding = {} if exists else {"VISIBILITY_REPHASED": {"compressors": None,
                                                                  "chunks": zarr_chunks}}
            new.to_zarr(store, group=name, mode="a", zarr_format=3, consolidated=False,
                        write_empty_chunks=True, encoding=encoding)
            field_static_dataset(ra_rad, dec_rad, field_name).to_zarr(
                store, group=f"{name}/{REPHASED_FIELD_NODE}", mode="w", zarr_format=3,
                consolidated=False)
            groups = dict(attrs["data_groups"])
            groups["rephased"] = rephased_data_group(ra_rad, dec_rad)
            zarr.open_group(store / name, mode="r+").attrs.update(
                {**attrs, "data_groups": groups})
            zarr.consolidate_metadata(store)
        log.info("rephased to ICRS (%.5f, %.5f) deg in %.1f s", np.degrees(ra_rad),
                 np.degrees(dec_rad), time.perf_counter() - t0)
    return ra_rad, dec_rad
