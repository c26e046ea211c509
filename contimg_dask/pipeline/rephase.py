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

from contimg_dask.coords.frames import (
    icrs_position_angle,
    icrs_to_apparent,
    local_apparent_sidereal_time,
)
from contimg_dask.coords.time import unix_to_jd
from contimg_dask.errors import InputError
from contimg_dask.io.block_store import (
    _quiet_zarr_strings,
    block_node,
    field_static_dataset,
    now_iso,
    open_block,
)
from contimg_dask.logs import get_logger, log_context
from contimg_dask.ops.phasing import phase_centres, rotate_visibilities, uvw_towards
from contimg_dask.ops.uvw import ecef_to_local_meridian
from contimg_dask.telescope.geodesy import ecef_to_geodetic

log = get_logger(__name__)
REPHASED_FIELD_NODE = "field_and_source_rephased_xds"


def default_centre(node: xr.DataTree) -> tuple[float, float]:
    """ICRS (ra, dec) of the recorded phasing at the block's mid-time: for a drift block the
    ICRS position of apparent HA 0 / pointing dec at the mid-time; for a tracked block its
    fixed centre."""
    ds = node.to_dataset(inherit=False)
    prov = ds.attrs["contimg"]
    centre = prov["phase_centre"]
    if centre["kind"] == "sidereal":
        return float(centre["ra_rad"]), float(centre["dec_rad"])
    site = prov["telescope_location_wgs84"]
    mid = unix_to_jd(np.array([float(ds.time.values.mean())]))
    pc = phase_centres("drift", centre["dec_rad"], None, mid, site["longitude_rad"],
                       site["latitude_rad"], site["height_m"])
    return float(pc["icrs_ra"][0]), float(pc["icrs_dec"][0])


def _baselines_local(node: xr.DataTree, longitude_rad: float) -> np.ndarray:
    ds = node.to_dataset(inherit=False)
    ant = node["antenna_xds"].to_dataset(inherit=False)
    positions = dict(zip(ant.antenna_name.values.tolist(),
                         ant.ANTENNA_POSITION.values, strict=True))
    p1 = np.array([positions[n] for n in ds.baseline_antenna1_name.values.tolist()])
    p2 = np.array([positions[n] for n in ds.baseline_antenna2_name.values.tolist()])
    return ecef_to_local_meridian(p2 - p1, longitude_rad)


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
        site = prov["telescope_location_wgs84"]
        lon, lat, height = site["longitude_rad"], site["latitude_rad"], site["height_m"]
        jd = unix_to_jd(ds.time.values)
        last = local_apparent_sidereal_time(jd, lon)
        app_ra, app_dec = icrs_to_apparent(np.full(len(jd), ra_rad), np.full(len(jd), dec_rad),
                                           jd, lon, lat, height)
        frame_pa = icrs_position_angle(app_ra, app_dec, jd, lon, lat, height)
        uvw_new = uvw_towards(_baselines_local(node, lon), last, app_ra, app_dec, frame_pa)
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
            _quiet_zarr_strings()
            # xarray's append mode resets the group's attributes: they are restored below.
            zarr_chunks = zarr.open_array(store / name / "VISIBILITY", mode="r").chunks
            new.to_zarr(store, group=name, mode="a", zarr_format=3, consolidated=False,
                        write_empty_chunks=True,
                        encoding={"VISIBILITY_REPHASED": {"compressors": None,
                                                          "chunks": zarr_chunks}})
            field_static_dataset(ra_rad, dec_rad, field_name).to_zarr(
                store, group=f"{name}/{REPHASED_FIELD_NODE}", mode="w", zarr_format=3,
                consolidated=False)
            groups = dict(attrs["data_groups"])
            groups["rephased"] = {
                "correlated_data": "VISIBILITY_REPHASED", "flag": "FLAG", "weight": "WEIGHT",
                "uvw": "UVW_REPHASED", "field_and_source": REPHASED_FIELD_NODE,
                "description": f"rephased to ICRS ({np.degrees(ra_rad):.6f}, "
                               f"{np.degrees(dec_rad):.6f}) deg, UVW from antenna positions",
                "date": now_iso()}
            zarr.open_group(store / name, mode="r+").attrs.update(
                {**attrs, "data_groups": groups})
            zarr.consolidate_metadata(store)
        log.info("rephased to ICRS (%.5f, %.5f) deg in %.1f s", np.degrees(ra_rad),
                 np.degrees(dec_rad), time.perf_counter() - t0)
    return ra_rad, dec_rad


def telescope_site(store_tree: xr.DataTree) -> tuple[float, float, float]:
    """WGS84 (lon, lat, height) of the observatory position recorded in a block store."""
    node = block_node(store_tree)
    pos = node[list(node.children)[1]].to_dataset(inherit=False)
    lon, lat, height = ecef_to_geodetic(pos.OBSERVER_POSITION.values)
    return float(lon), float(lat), float(height)
