"""The DSA-110 array model: stations, active antennas, reference position, dish, beam."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from contimg_dask.config.schema import TelescopeConfig
from contimg_dask.errors import ConfigError
from contimg_dask.telescope.geodesy import ecef_offsets_to_enu, geodetic_to_ecef
from contimg_dask.telescope.stations import StationTable, load_stations


@dataclass(frozen=True)
class Telescope:
    """An array of stations with a reference position and identical dishes.

    Antenna numbering follows the correlator: antenna number = station number - 1 (0-based),
    antenna name = str(station number) ("1".."117").
    """

    name: str
    casa_name: str
    instrument: str
    stations: StationTable
    active_stations: tuple[int, ...]
    longitude_rad: float
    latitude_rad: float
    height_m: float
    dish_diameter_m: float
    sefd_jy: float

    @property
    def n_stations(self) -> int:
        return len(self.stations.numbers)

    @property
    def antenna_numbers(self) -> NDArray[np.int64]:
        """0-based antenna numbers of all stations."""
        return self.stations.numbers - 1

    @property
    def antenna_names(self) -> list[str]:
        return [str(n) for n in self.stations.numbers]

    @property
    def active_antenna_numbers(self) -> NDArray[np.int64]:
        """0-based numbers of the antennas delivering data, ascending."""
        return np.array(sorted(s - 1 for s in self.active_stations), dtype=np.int64)

    @cached_property
    def reference_ecef(self) -> NDArray[np.float64]:
        """ECEF (ITRF) position of the array reference, metres."""
        return geodetic_to_ecef(self.longitude_rad, self.latitude_rad, self.height_m)

    @cached_property
    def ecef(self) -> NDArray[np.float64]:
        """ECEF positions of all stations, shape (n_stations, 3), metres."""
        return geodetic_to_ecef(np.radians(self.stations.longitude_deg),
                                np.radians(self.stations.latitude_deg),
                                self.stations.elevation_m)

    @cached_property
    def relative_ecef(self) -> NDArray[np.float64]:
        """ECEF offsets of all stations from the reference (UVH5 ``antenna_positions``)."""
        return self.ecef - self.reference_ecef

    @cached_property
    def enu(self) -> NDArray[np.float64]:
        """East, north, up of all stations relative to the reference, metres."""
        return ecef_offsets_to_enu(self.relative_ecef, self.longitude_rad, self.latitude_rad)


def load_telescope(config: TelescopeConfig) -> Telescope:
    """Build the :class:`Telescope` described by the ``telescope`` configuration section."""
    stations = load_stations(config.stations_file)
    if len(stations.numbers) != config.n_stations:
        raise ConfigError(
            f"station table has {len(stations.numbers)} stations, configuration says "
            f"{config.n_stations}", file=stations.source, key="telescope.n_stations")
    inactive = set(config.inactive_stations)
    active = tuple(int(n) for n in stations.numbers if int(n) not in inactive)
    return Telescope(
        name=config.name,
        casa_name=config.casa_name,
        instrument=config.instrument,
        stations=stations,
        active_stations=active,
        longitude_rad=config.reference.longitude_rad,
        latitude_rad=config.reference.latitude_rad,
        height_m=config.reference.height_m,
        dish_diameter_m=config.dish_diameter_m,
        sefd_jy=config.sefd_jy,
    )
