"""The reference catalogue of forced photometry: the sources measured on every image.

A CSV file with a header row and the columns ``name``, ``ra_deg``, ``dec_deg`` (ICRS, deg) and
``flux_jy`` (Jy, at ~1.4 GHz, e.g. NVSS), optionally ``major_arcsec``, ``minor_arcsec`` (FWHM
of the deconvolved source; empty or absent = point source) and ``pa_deg``. Every problem is
an :class:`~contimg_dask.errors.InputError` naming the file, the column and the first bad
rows. The catalogue's version is a hash of its content, so a changed catalogue gives new
measurement tables instead of overwriting those of the old one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from contimg_dask.errors import InputError

REQUIRED_COLUMNS = ("name", "ra_deg", "dec_deg", "flux_jy")
SHAPE_COLUMNS = ("major_arcsec", "minor_arcsec", "pa_deg")


@dataclass(frozen=True)
class PhotometryCatalog:
    """A validated catalogue: one row per source, sorted as in the file."""

    path: Path
    table: pd.DataFrame  # name, ra_deg, dec_deg, flux_jy, major_arcsec, minor_arcsec, pa_deg
    version: str  # 12 hex digits of the content hash

    @property
    def names(self) -> NDArray[np.str_]:
        return self.table["name"].to_numpy(str)

    def unit_vectors(self) -> NDArray[np.float64]:
        """ICRS unit vectors (sources, 3)."""
        ra, dec = np.radians(self.table["ra_deg"]), np.radians(self.table["dec_deg"])
        return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra),
                                np.sin(dec)])

    def isolated(self, radius_arcsec: float) -> NDArray[np.bool_]:
        """True for sources with no other catalogue source within ``radius_arcsec``."""
        chord = 2 * np.sin(np.radians(radius_arcsec / 3600) / 2)
        tree = cKDTree(self.unit_vectors())
        counts = tree.query_ball_point(self.unit_vectors(), chord, return_length=True)
        return np.asarray(counts) <= 1

    def compact(self, max_size_arcsec: float) -> NDArray[np.bool_]:
        """True for sources whose catalogue major axis is at most ``max_size_arcsec`` (no
        shape given: a point source)."""
        major = self.table["major_arcsec"].to_numpy(float)
        return ~(major > max_size_arcsec)


def _bad_rows(mask: NDArray[np.bool_]) -> str:
    rows = np.flatnonzero(mask)[:5] + 2  # 1-based, after the header row
    return ", ".join(str(r) for r in rows) + (" ..." if mask.sum() > 5 else "")


def read_photometry_catalog(path: str | Path) -> PhotometryCatalog:
    """Read and validate a catalogue CSV (see the module docstring)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, skipinitialspace=True, comment="#")
    except FileNotFoundError:
        raise InputError("catalogue file does not exist", file=path) from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"catalogue is not a readable CSV file: {exc}", file=path) from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"catalogue lacks the column(s) {', '.join(missing)} (needs "
                         f"{', '.join(REQUIRED_COLUMNS)}; has {', '.join(table.columns)})",
                         file=path)
    if table.empty:
        raise InputError("catalogue has no sources", file=path)
    for column in SHAPE_COLUMNS:
        if column not in table.columns:
            table[column] = np.nan
    table = table[[*REQUIRED_COLUMNS, *SHAPE_COLUMNS]].copy()
    table["name"] = table["name"].astype(str).str.strip()
    for column in (*REQUIRED_COLUMNS[1:], *SHAPE_COLUMNS):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if column in REQUIRED_COLUMNS:
            bad |= values.isna()
        if bad.any():
            raise InputError(f"catalogue column {column} is not a number in row(s) "
                             f"{_bad_rows(bad.to_numpy())}", file=path)
        table[column] = values.astype(float)
    checks = {"ra_deg": (table.ra_deg < 0) | (table.ra_deg >= 360),
              "dec_deg": table.dec_deg.abs() > 90,
              "flux_jy": table.flux_jy <= 0}
    for column, bad in checks.items():
        if bad.any():
            raise InputError(f"catalogue column {column} is out of range in row(s) "
                             f"{_bad_rows(bad.to_numpy())}", file=path)
    duplicated = table["name"].duplicated(keep=False) | (table["name"] == "")
    if duplicated.any():
        raise InputError(f"catalogue names must be unique and non-empty: row(s) "
                         f"{_bad_rows(duplicated.to_numpy())}", file=path)
    digest = hashlib.sha256(table.to_csv(index=False, float_format="%.10g").encode())
    return PhotometryCatalog(path, table.reset_index(drop=True), digest.hexdigest()[:12])


def write_photometry_catalog(path: Path, table: pd.DataFrame) -> None:
    """Write ``table`` (the catalogue columns) as a catalogue CSV at ``path`` (the caller
    makes it atomic)."""
    columns = [*REQUIRED_COLUMNS, *[c for c in SHAPE_COLUMNS if c in table.columns]]
    table[columns].to_csv(path, index=False, float_format="%.10g")
