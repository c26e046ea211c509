"""The block store: one observation block as an xradio MSv4 processing set in zarr v3.

Layout (``BLOCK.zarr``)::

    BLOCK.zarr/                        group, type = processing_set
      <block>_0/                       the MSv4 visibility dataset (type = visibility)
        VISIBILITY, FLAG, WEIGHT, UVW  (time, baseline_id, frequency, polarization) / uvw_label
        antenna_xds/                   ITRS antenna positions and dish diameters
        field_and_source_base_xds/     the phasing as recorded: one phase centre per
                                       integration (type = field_and_source_ephemeris)

Later stages add data groups beside ``base`` and register them last, so a stage
interrupted half-way leaves no visible trace. ``rephased`` (UVW_REPHASED,
field_and_source_rephased_xds) is by default derived: its visibilities are the base ones
rotated on the fly and it is registered in ``contimg.derived_groups``; materialised, it
stores VISIBILITY_REPHASED and is an MSv4 ``data_groups`` entry (io/store/data_groups.py).

Conventions: frequency ascending (Hz, TOPO), time in Unix seconds (UTC) at integration
centres, UVW in metres (float64) for ``x[ant2] - x[ant1]`` towards each integration's phase
centre, FIELD_PHASE_CENTER_DIRECTION in ICRS radians. Our own provenance lives in the
``contimg`` attribute of the visibility dataset.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from numpy.typing import NDArray
from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning

from contimg_dask import __version__
from contimg_dask.errors import InputError
from contimg_dask.io.system.atomic import atomic_directory

SCHEMA_VERSION = "4.0.1"
TIME_ATTRS = {"type": "time", "units": "s", "scale": "utc", "format": "unix"}
SKY_ICRS = {"type": "sky_coord", "units": "rad", "frame": "icrs"}
LOCATION_ATTRS = {"type": "location", "units": "m", "frame": "ITRS",
                  "coordinate_system": "geocentric", "origin_object_name": "earth"}
VIS_DIMS = ("time", "baseline_id", "frequency", "polarization")
BASE_FIELD_NODE = "field_and_source_base_xds"
REPHASED_FIELD_NODE = "field_and_source_rephased_xds"


def quiet_zarr_strings() -> None:
    """Inside a ``warnings.catch_warnings()`` block: silence zarr's notes on fixed-length
    strings (xradio stores names the same way) and on consolidated metadata (not yet in the
    zarr v3 spec; xradio writes it too). Only those two, and only when zarr raises them."""
    warnings.filterwarnings("ignore", category=UnstableSpecificationWarning, module="zarr")
    warnings.filterwarnings("ignore", message="Consolidated metadata", category=ZarrUserWarning,
                            module="zarr")


def _quantity(value: float, units: str) -> dict[str, Any]:
    return {"data": float(value), "dims": [], "attrs": {"type": "quantity", "units": units}}


def nearly_constant_codec() -> zarr.codecs.BloscCodec:
    """The codec of flags and weights: Blosc LZ4 with byte-shuffling."""
    return zarr.codecs.BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")


def store_encoding(chunks: tuple[int, ...]) -> dict[str, dict]:
    """zarr chunks and codecs of the bulk arrays (VISIBILITY[_REPHASED], FLAG, WEIGHT).

    Visibilities are noise-like and do not compress: stored raw. Flags and weights are nearly
    constant: LZ4 with byte-shuffling shrinks them >200x, encoding at ~10 GB/s (bit-shuffling
    compresses as well but encodes at 1.5 GB/s; measurements in docs/block-store.md)."""
    fast = nearly_constant_codec()
    return {"VISIBILITY": {"compressors": None, "chunks": chunks},
            "VISIBILITY_REPHASED": {"compressors": None, "chunks": chunks},
            "FLAG": {"compressors": [fast], "chunks": chunks},
            "WEIGHT": {"compressors": [fast], "chunks": chunks}}


def msv4_name(block_id: str) -> str:
    """The MSv4 node name of a block (no ':' in group names)."""
    return block_id.replace(":", "-") + "_0"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def visibility_dataset(*, unix: NDArray, freq_hz: NDArray, channel_width_hz: float,
                       integration_time_s: float, polarizations: list[str],
                       ant1_names: list[str], ant2_names: list[str], vis: Any, flag: Any,
                       weight: Any, uvw: NDArray, field_name: str, spw_name: str,
                       provenance: dict[str, Any]) -> xr.Dataset:
    """The MSv4 visibility dataset (arrays may be NumPy or Dask)."""
    n_bl = len(ant1_names)
    return xr.Dataset(
        data_vars={
            "VISIBILITY": (VIS_DIMS, vis, {"units": "Jy"}),
            "FLAG": (VIS_DIMS, flag),
            "WEIGHT": (VIS_DIMS, weight),
            "UVW": (("time", "baseline_id", "uvw_label"), uvw,
                    {"type": "uvw", "units": "m", "frame": "icrs"}),
        },
        coords={
            "time": ("time", np.asarray(unix, np.float64),
                     {**TIME_ATTRS, "integration_time": _quantity(integration_time_s, "s")}),
            "baseline_id": ("baseline_id", np.arange(n_bl, dtype=np.int64)),
            "frequency": ("frequency", np.asarray(freq_hz, np.float64), {
                "type": "spectral_coord", "units": "Hz", "observer": "TOPO",
                "spectral_window_name": spw_name,
                "spectral_window_intents": ["UNSPECIFIED"],
                "reference_frequency": {"data": float(freq_hz[0]), "dims": [], "attrs": {
                    "type": "spectral_coord", "units": "Hz", "observer": "TOPO"}},
                "channel_width": _quantity(channel_width_hz, "Hz"),
            }),
            "polarization": ("polarization", np.array(polarizations)),
            "uvw_label": ("uvw_label", np.array(["u", "v", "w"])),
            "baseline_antenna1_name": ("baseline_id", np.array(ant1_names)),
            "baseline_antenna2_name": ("baseline_id", np.array(ant2_names)),
            "field_name": ("time", np.full(len(unix), field_name)),
            "scan_name": ("time", np.full(len(unix), "1"),
                          {"scan_intents": ["OBSERVE_TARGET#ON_SOURCE"]}),
        },
        attrs={
            "type": "visibility",
            "schema_version": SCHEMA_VERSION,
            "creator": {"software_name": "contimg-dask", "version": __version__},
            "creation_date": now_iso(),
            "observation_info": {"observer": ["DSA-110"], "release_date": now_iso(),
                                 "project_UID": "contimg"},
            "processor_info": {"type": "CORRELATOR", "sub_type": "DSA-110"},
            "data_groups": {"base": {
                "correlated_data": "VISIBILITY", "flag": "FLAG", "weight": "WEIGHT",
                "uvw": "UVW", "field_and_source": BASE_FIELD_NODE,
                "description": "as written by the correlator; UVW recomputed (float64) "
                               "for the recorded per-integration phase centres",
                "date": now_iso()}},
            "contimg": provenance,
        },
    )


def rephased_data_group(base: dict[str, Any], ra_rad: float, dec_rad: float,
                        materialised: bool) -> dict[str, Any]:
    """The ``rephased`` group's entry: flags and weights shared with the ``base`` entry.
    Materialised, its visibilities are VISIBILITY_REPHASED; otherwise they are the base
    visibilities rotated on the fly (``rotated_from_uvw``, see io/store/data_groups.py)."""
    entry = {"correlated_data": "VISIBILITY_REPHASED", "flag": base["flag"],
             "weight": base["weight"], "uvw": "UVW_REPHASED",
             "field_and_source": REPHASED_FIELD_NODE,
             "description": f"rephased to ICRS ({np.degrees(ra_rad):.6f}, "
                            f"{np.degrees(dec_rad):.6f}) deg, UVW from antenna positions",
             "date": now_iso()}
    if not materialised:
        entry.update(correlated_data=base["correlated_data"],
                     rotated_from_uvw=base["uvw"],
                     description=entry["description"] + "; visibilities rotated on the fly")
    return entry


def with_rephased_group(attrs: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """Attributes with ``entry`` registered as the ``rephased`` group: in ``data_groups``
    when materialised, else in ``contimg.derived_groups`` (and removed from the other)."""
    groups = dict(attrs["data_groups"])
    contimg = dict(attrs["contimg"])
    derived = dict(contimg.get("derived_groups", {}))
    groups.pop("rephased", None)
    derived.pop("rephased", None)
    (derived if "rotated_from_uvw" in entry else groups)["rephased"] = entry
    contimg["derived_groups"] = derived
    return {**attrs, "data_groups": groups, "contimg": contimg}


def with_rephased(vis: xr.Dataset, vis_rephased: Any | None, uvw_rephased: NDArray,
                  ra_rad: float, dec_rad: float) -> xr.Dataset:
    """``vis`` plus the rephased group's variables (``vis_rephased`` None: rotated on the
    fly, not stored), registered."""
    variables = {"UVW_REPHASED": (vis.UVW.dims, uvw_rephased, dict(vis.UVW.attrs))}
    if vis_rephased is not None:
        variables["VISIBILITY_REPHASED"] = (VIS_DIMS, vis_rephased,
                                            dict(vis.VISIBILITY.attrs))
    out = vis.assign(**variables)
    entry = rephased_data_group(vis.attrs["data_groups"]["base"], ra_rad, dec_rad,
                                materialised=vis_rephased is not None)
    out.attrs = with_rephased_group(vis.attrs, entry)
    return out


def antenna_dataset(names: list[str], itrs_m: NDArray, diameters_m: NDArray,
                    telescope_name: str, polarization_types: list[str]) -> xr.Dataset:
    """MSv4 antenna dataset: ITRS positions (m) and dish diameters of the block's antennas."""
    n = len(names)
    return xr.Dataset(
        data_vars={
            "ANTENNA_POSITION": (("antenna_name", "cartesian_pos_label"),
                                 np.asarray(itrs_m, np.float64), LOCATION_ATTRS),
            "ANTENNA_DISH_DIAMETER": ("antenna_name", np.asarray(diameters_m, np.float64),
                                      {"type": "quantity", "units": "m"}),
        },
        coords={
            "antenna_name": ("antenna_name", np.array(names)),
            "station_name": ("antenna_name", np.array([f"DSA-{int(n_):03d}" if n_.isdigit()
                                                        else n_ for n_ in names])),
            "mount": ("antenna_name", np.full(n, "ALT-AZ")),
            "telescope_name": ("antenna_name", np.full(n, telescope_name)),
            "receptor_label": ("receptor_label", np.array(["pol_0", "pol_1"])),
            "polarization_type": (("antenna_name", "receptor_label"),
                                  np.tile(np.array(polarization_types), (n, 1))),
            "cartesian_pos_label": ("cartesian_pos_label", np.array(["x", "y", "z"])),
        },
        attrs={"type": "antenna", "overall_telescope_name": telescope_name},
    )


def field_ephemeris_dataset(unix: NDArray, icrs_ra: NDArray, icrs_dec: NDArray,
                            app_ra: NDArray, app_dec: NDArray, observer_itrs_m: NDArray,
                            field_name: str) -> xr.Dataset:
    """Per-integration phase centres (ICRS, and apparent as recorded by the correlator)."""
    icrs = np.stack([icrs_ra, icrs_dec], axis=1)
    return xr.Dataset(
        data_vars={
            "FIELD_PHASE_CENTER_DIRECTION": (("time", "sky_dir_label"), icrs, SKY_ICRS),
            "SOURCE_DIRECTION": (("time", "sky_dir_label"), icrs.copy(), SKY_ICRS),
            "FIELD_PHASE_CENTER_APPARENT": (("time", "sky_dir_label"),
                                            np.stack([app_ra, app_dec], axis=1),
                                            {"type": "sky_coord", "units": "rad",
                                             "frame": "APP"}),
            "OBSERVER_POSITION": ("cartesian_pos_label", np.asarray(observer_itrs_m, float),
                                  LOCATION_ATTRS),
        },
        coords={
            "time": ("time", np.asarray(unix, np.float64), dict(TIME_ATTRS)),
            "cartesian_pos_label": ("cartesian_pos_label", np.array(["x", "y", "z"])),
            "field_name": ("time", np.full(len(unix), field_name)),
            "source_name": ("time", np.full(len(unix), field_name)),
            "sky_dir_label": ("sky_dir_label", np.array(["ra", "dec"])),
        },
        attrs={"type": "field_and_source_ephemeris"},
    )


def field_static_dataset(ra: float, dec: float, field_name: str) -> xr.Dataset:
    """One fixed ICRS phase centre."""
    return xr.Dataset(
        data_vars={"FIELD_PHASE_CENTER_DIRECTION": (("field_name", "sky_dir_label"),
                                                    np.array([[ra, dec]]), SKY_ICRS)},
        coords={"field_name": ("field_name", np.array([field_name])),
                "source_name": ("field_name", np.array([field_name])),
                "sky_dir_label": ("sky_dir_label", np.array(["ra", "dec"]))},
        attrs={"type": "field_and_source"},
    )


def write_processing_set(path: Path, name: str, vis: xr.Dataset, antenna: xr.Dataset,
                         field: xr.Dataset, encoding: dict[str, dict] | None = None,
                         fill: Callable[[Path], None] | None = None,
                         rephased_field: xr.Dataset | None = None,
                         overwrite: bool = False) -> Path:
    """Write a one-MSv4 processing set atomically (io/system/atomic.py): under a temporary
    name, then renamed.

    With ``fill``, Dask-backed variables are not computed: the store's structure and the
    small arrays are written, then ``fill(group_path)`` writes the bulk data straight into
    the zarr arrays of the MSv4 group (one task per chunk, no data passed between tasks).
    An existing block store at ``path`` is replaced only once the new one is complete;
    anything else there only with ``overwrite`` (io/system/atomic.py).
    """
    msv4 = xr.DataTree(dataset=vis)
    msv4["antenna_xds"] = xr.DataTree(dataset=antenna)
    msv4[BASE_FIELD_NODE] = xr.DataTree(dataset=field)
    if rephased_field is not None:
        msv4[REPHASED_FIELD_NODE] = xr.DataTree(dataset=rephased_field)
    encoding = {k: v for k, v in (encoding or {}).items() if k in vis}
    tree = xr.DataTree()
    tree.attrs["type"] = "processing_set"
    tree[name] = msv4
    with atomic_directory(path, "block_store", overwrite) as tmp:
        with warnings.catch_warnings():
            quiet_zarr_strings()
            tree.to_zarr(tmp, zarr_format=3, consolidated=True, mode="w",
                         encoding={f"/{name}": encoding}, compute=fill is None)
        if fill is not None:
            fill(tmp / name)
    return path


def open_block(path: str | Path) -> xr.DataTree:
    """Open a block store lazily (Dask arrays), as ``xradio.open_processing_set`` does."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise InputError("not a block store (no zarr.json)", file=path)
    with warnings.catch_warnings():
        quiet_zarr_strings()
        tree = xr.open_datatree(path, engine="zarr", chunks={})
    if tree.attrs.get("type") != "processing_set" or len(tree.children) != 1:
        raise InputError("not a one-block processing set", file=path)
    return tree


def block_node(tree: xr.DataTree) -> xr.DataTree:
    """The MSv4 node of a block store."""
    return next(iter(tree.children.values()))
