"""The DSA-110 station table (WGS84 positions of the 117 stations)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from contimg_dask.errors import ConfigError

PACKAGED_STATIONS = "DSA110_Station_Coordinates.csv"


@dataclass(frozen=True)
class StationTable:
    """Station numbers (1-based) with WGS84 latitude/longitude (deg) and elevation (m)."""

    numbers: NDArray[np.int64]
    latitude_deg: NDArray[np.float64]
    longitude_deg: NDArray[np.float64]
    elevation_m: NDArray[np.float64]
    source: str


def _parse_rows(lines: list[str], source: str) -> StationTable:
    numbers, lats, lons, elevs = [], [], [], []
    header_seen = False
    for row in csv.reader(lines):
        cells = [c.strip() for c in row]
        if not header_seen:
            header_seen = "Station Number" in cells
            continue
        if len(cells) < 5 or not cells[1].startswith("DSA-"):
            continue
        try:
            numbers.append(int(cells[1].removeprefix("DSA-")))
            lats.append(float(cells[2]))
            lons.append(float(cells[3]))
            elevs.append(float(cells[4]) if cells[4] else np.nan)
        except ValueError as exc:
            raise ConfigError(f"bad station row {row!r}: {exc}", file=source) from exc
    if not header_seen or not numbers:
        raise ConfigError("no station rows found (expected a 'Station Number' header)",
                          file=source)
    elev = np.array(elevs)
    lat = np.array(lats)
    lon = np.array(lons)
    for i in np.flatnonzero(np.isnan(elev)):
        # DSA-117 has no elevation in the published table: take the mean elevation of the
        # two horizontally nearest stations that have one (for DSA-117: DSA-116 and DSA-001,
        # giving 1180.35 m).
        known = np.flatnonzero(~np.isnan(elev))
        dist = np.hypot((lat[known] - lat[i]) * 111e3,
                        (lon[known] - lon[i]) * 111e3 * np.cos(np.radians(lat[i])))
        elev[i] = elev[known[np.argsort(dist)[:2]]].mean()
    return StationTable(np.array(numbers), lat, lon, elev, source)


def load_stations(path: Path | None = None) -> StationTable:
    """Read the station CSV (the packaged copy when ``path`` is None)."""
    if path is None:
        ref = resources.files("contimg_dask.telescope") / "data" / PACKAGED_STATIONS
        return _parse_rows(ref.read_text().splitlines(), f"package data {PACKAGED_STATIONS}")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read station table: {exc.strerror}", file=path,
                          key="telescope.stations_file") from exc
    return _parse_rows(text.splitlines(), str(path))
