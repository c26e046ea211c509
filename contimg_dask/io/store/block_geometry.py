"""The geometry of a block store: times, site, baselines, antennas, pointing and frequencies,
read once from the store's small arrays and provenance (no visibilities)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from contimg_dask.coords.frames import icrs_to_apparent, local_apparent_sidereal_time
from contimg_dask.coords.time import unix_to_jd
from contimg_dask.errors import InputError
from contimg_dask.ops.uvw import ecef_to_local_meridian


@dataclass(frozen=True)
class BlockGeometry:
    """Everything but the bulk data of a block. Angles in radians, times Unix s (UTC) at
    integration centres, baselines ``x[ant2] - x[ant1]`` in the local-meridian frame (m)."""

    store: Path
    block_id: str
    times_unix: NDArray[np.float64]
    jd: NDArray[np.float64]
    integration_time_s: float
    longitude_rad: float
    latitude_rad: float
    height_m: float
    antenna_names: list[str]
    ant1: NDArray[np.int64]  # per baseline, index into antenna_names
    ant2: NDArray[np.int64]
    baselines_local_m: NDArray[np.float64]  # (baseline, 3)
    dish_diameter_m: float
    pointing_kind: str  # "drift" (apparent HA 0) or "sidereal" (a fixed ICRS direction)
    pointing_dec_rad: float
    pointing_ra_rad: float | None
    freq_hz: NDArray[np.float64]
    polarizations: list[str]
    subbands: list[int]
    subband_chunks: list[int]

    @cached_property
    def last(self) -> NDArray[np.float64]:
        """Local apparent sidereal time (rad) at each integration (loads the IERS table)."""
        return local_apparent_sidereal_time(self.jd, self.longitude_rad)

    @property
    def site(self) -> tuple[float, float, float]:
        return self.longitude_rad, self.latitude_rad, self.height_m

    @property
    def mid_unix(self) -> float:
        return float(0.5 * (self.times_unix[0] + self.times_unix[-1]))

    def subband_slices(self) -> list[slice]:
        """The frequency slice of each subband chunk."""
        edges = np.concatenate([[0], np.cumsum(self.subband_chunks)]).astype(int)
        return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]

    def pointing_apparent(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Apparent (ra, dec) of the dishes' pointing at each integration."""
        n = len(self.jd)
        if self.pointing_kind == "drift":
            return self.last.copy(), np.full(n, self.pointing_dec_rad)
        return icrs_to_apparent(np.full(n, self.pointing_ra_rad),
                                np.full(n, self.pointing_dec_rad), self.jd, *self.site)


def geometry_of(node: xr.DataTree, store: Path) -> BlockGeometry:
    """The geometry of an opened block (its MSv4 node)."""
    ds = node.to_dataset(inherit=False)
    prov = ds.attrs.get("contimg")
    if prov is None:
        raise InputError("block store has no contimg provenance (not ingested by us)",
                         file=store)
    antenna = node["antenna_xds"].to_dataset(inherit=False)
    names = antenna.antenna_name.values.tolist()
    index = {n: i for i, n in enumerate(names)}
    ant1 = np.array([index[n] for n in ds.baseline_antenna1_name.values.tolist()], np.int64)
    ant2 = np.array([index[n] for n in ds.baseline_antenna2_name.values.tolist()], np.int64)
    site = prov["telescope_location_wgs84"]
    lon = float(site["longitude_rad"])
    positions = antenna.ANTENNA_POSITION.values
    times = np.asarray(ds.time.values, np.float64)
    jd = unix_to_jd(times)
    centre = prov["phase_centre"]
    return BlockGeometry(
        store=store, block_id=prov["block_id"], times_unix=times, jd=jd,
        integration_time_s=float(ds.time.attrs["integration_time"]["data"]),
        longitude_rad=lon, latitude_rad=float(site["latitude_rad"]),
        height_m=float(site["height_m"]),
        antenna_names=names, ant1=ant1, ant2=ant2,
        baselines_local_m=ecef_to_local_meridian(positions[ant2] - positions[ant1], lon),
        dish_diameter_m=float(np.mean(antenna.ANTENNA_DISH_DIAMETER.values)),
        pointing_kind=centre["kind"], pointing_dec_rad=float(centre["dec_rad"]),
        pointing_ra_rad=None if centre["ra_rad"] is None else float(centre["ra_rad"]),
        freq_hz=np.asarray(ds.frequency.values, np.float64),
        polarizations=[str(p) for p in ds.polarization.values],
        subbands=list(prov["subbands"]), subband_chunks=list(prov["subband_chunks"]))
