"""Export a block store to the formats astronomers use.

- Measurement Set: our own writer (``ms_writer``), streaming one subband at a time.
- UVFITS, MIRIAD, UVH5: through pyuvdata, from a ``UVData`` built from the store's data
  group. The store's UVWs are carried over unchanged (they are the authority); pyuvdata
  checks them against its own computation on write. These formats hold one data column:
  when calibration has been applied to the group, it is the calibrated data (flags
  included; nsamples stay the uncalibrated weights), with ``vis_units`` Jy.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation

from contimg_dask.config import PipelineConfig
from contimg_dask.constants import POLARIZATION_CODES as POL_CODES
from contimg_dask.coords.time import unix_to_jd
from contimg_dask.errors import InputError
from contimg_dask.io.outputs.ms_writer import write_ms
from contimg_dask.io.store.block_calibration import corrected_dataset, read_block_calibration
from contimg_dask.io.store.block_view import fixed_centre_group
from contimg_dask.io.system.atomic import atomic_directory, atomic_file, check_replaceable

PYUVDATA_FORMATS = ("uvfits", "miriad", "uvh5")


def block_to_uvdata(store: Path, data_group: str = "rephased"):  # -> pyuvdata.UVData
    """The store's ``data_group`` as a pyuvdata ``UVData`` (in memory: for exports)."""
    from pyuvdata import Telescope, UVData

    view = fixed_centre_group(store, data_group)
    block = view.block
    node, ds, group = block.node, block.dataset, block.names
    ra, dec = view.ra_rad, view.dec_rad
    prov = ds.attrs["contimg"]
    site = prov["telescope_location_wgs84"]
    location = EarthLocation.from_geodetic(site["longitude_rad"] * u.rad,
                                           site["latitude_rad"] * u.rad,
                                           site["height_m"] * u.m)
    antenna = node["antenna_xds"].to_dataset(inherit=False)
    names = antenna.antenna_name.values.tolist()
    numbers = (np.array([int(n) - 1 for n in names]) if all(n.isdigit() for n in names)
               else np.arange(len(names)))
    origin = np.array([location.x.to_value(u.m), location.y.to_value(u.m),
                       location.z.to_value(u.m)])
    telescope = Telescope.new(
        name=prov["telescope_name_in_files"], location=location,
        antenna_positions=antenna.ANTENNA_POSITION.values - origin, antenna_names=names,
        antenna_numbers=numbers, instrument=prov["instrument"] or None,
        antenna_diameters=antenna.ANTENNA_DISH_DIAMETER.values, update_from_known=False)
    number_of = dict(zip(names, numbers, strict=True))
    pairs = np.array([[number_of[a], number_of[b]] for a, b in zip(
        ds.baseline_antenna1_name.values.tolist(), ds.baseline_antenna2_name.values.tolist(),
        strict=True)])
    data, flag, units = block.visibilities, ds[group["flag"]].data, "uncalib"
    n_t, n_bl, n_f, n_p = data.shape
    calibration = read_block_calibration(node)
    if calibration is not None and calibration.data_group == data_group:
        corrected = corrected_dataset(store)
        data, flag = corrected.VISIBILITY_CORRECTED.data, corrected.FLAG_CORRECTED.data
        units = "Jy"
    flag = np.asarray(flag).reshape(n_t * n_bl, n_f, n_p)
    with warnings.catch_warnings():
        # UVData.new computes UVWs of its own and warns that it does not rephase for them:
        # the store's UVWs (the authority) replace them below, so the warning does not apply.
        warnings.filterwarnings("ignore", message="Recalculating uvw_array without adjusting",
                                category=UserWarning, module="pyuvdata")
        uv = UVData.new(
            freq_array=ds.frequency.values, polarization_array=[POL_CODES[p] for p in
                                                                 ds.polarization.values],
            times=unix_to_jd(ds.time.values), telescope=telescope, antpairs=pairs,
            do_blt_outer=True, time_axis_faster_than_bls=False,
            integration_time=float(ds.time.attrs["integration_time"]["data"]),
            channel_width=float(ds.frequency.attrs["channel_width"]["data"]),
            data_array=np.asarray(data).reshape(n_t * n_bl, n_f, n_p),
            flag_array=flag,
            nsample_array=np.where(flag, 0.0, ds[group["weight"]].values.reshape(
                n_t * n_bl, n_f, n_p)).astype(np.float32),
            phase_center_catalog={0: {"cat_name": view.field_name,
                                      "cat_type": "sidereal", "cat_lon": ra, "cat_lat": dec,
                                      "cat_frame": "icrs", "cat_epoch": 2000.0}},
            phase_center_id_array=np.zeros(n_t * n_bl, int),
            vis_units=units, history=f"exported by contimg-dask from {store.name} (data group "
                                     f"{data_group}{', calibrated' if units == 'Jy' else ''})")
    uv.uvw_array = ds[group["uvw"]].values.reshape(n_t * n_bl, 3)
    uv.extra_keywords["TELESCOP"] = prov["telescope"]
    return uv


def export_block(store: Path, out: Path, fmt: str, config: PipelineConfig,
                 data_group: str = "rephased", spw_layout: str | int = "per_subband",
                 overwrite: bool = False) -> Path:
    """Export ``store`` to ``out`` in ``fmt`` (ms, uvfits, miriad, uvh5), written under a
    temporary name and renamed into place (io/system/atomic.py: an existing product of the same
    format is replaced, anything else only with ``overwrite``)."""
    if fmt == "ms":
        return write_ms(store, out, data_group=data_group, spw_layout=spw_layout,
                        telescope_casa_name=config.telescope.casa_name, overwrite=overwrite)
    if fmt not in PYUVDATA_FORMATS:
        raise InputError(f"unknown export format {fmt!r}", stage="export")
    check_replaceable(Path(os.path.abspath(out)), fmt, overwrite)
    uv = block_to_uvdata(store, data_group)
    if fmt == "miriad":
        with atomic_directory(out, fmt, overwrite) as tmp:
            uv.write_miriad(str(tmp))
        return out
    with atomic_file(out, fmt, overwrite) as tmp:
        if fmt == "uvfits":
            uv.write_uvfits(str(tmp), force_phase=False, use_miriad_convention=False)
        else:
            uv.write_uvh5(str(tmp))
    return out
