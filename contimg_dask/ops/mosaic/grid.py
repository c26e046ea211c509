"""The mosaic's output grid, chosen with circular statistics so that fields crossing
RA 0/360 deg work.

The centre is the direction of the mean *unit vector* of the inputs' footprints (never an
arithmetic mean of RA, which puts a strip across RA 0 at RA 180). The span is what the
footprints cover once projected about that centre. Angles in degrees, ICRS; pixels 0-based
unless a FITS keyword says otherwise (CRPIX is 1-based).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from numpy.typing import ArrayLike

#: Projections the mosaic grid may use (FITS codes).
PROJECTIONS = ("SIN", "CAR")


def mean_direction(ra_deg: ArrayLike, dec_deg: ArrayLike) -> tuple[float, float]:
    """The direction (RA in [0, 360), Dec; deg) of the mean unit vector of the directions.

    Raises
    ------
    ValueError
        The directions have no meaningful mean (they surround the sphere's axis, e.g. a full
        24 h strip): mosaic them in pieces.
    """
    ra, dec = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    vector = np.array([np.mean(np.cos(dec) * np.cos(ra)), np.mean(np.cos(dec) * np.sin(ra)),
                       np.mean(np.sin(dec))])
    length = float(np.linalg.norm(vector))
    if length < 1e-3:
        raise ValueError("the inputs surround the celestial pole's axis (their mean direction "
                         "is undefined): mosaic them in pieces")
    vector /= length
    return (float(np.degrees(np.arctan2(vector[1], vector[0])) % 360.0),
            float(np.degrees(np.arcsin(np.clip(vector[2], -1, 1)))))


@dataclass(frozen=True)
class MosaicGrid:
    """An output grid: projection ``projection`` about (``ra_deg``, ``dec_deg``), square
    pixels of ``cell_deg``, ``nx`` x ``ny`` pixels, the centre at 1-based pixel
    (``crpix1``, ``crpix2``); RA increases to the left (CDELT1 < 0)."""

    ra_deg: float
    dec_deg: float
    cell_deg: float
    nx: int
    ny: int
    crpix1: float
    crpix2: float
    projection: str = "SIN"

    @property
    def shape(self) -> tuple[int, int]:
        return self.ny, self.nx

    def header(self) -> fits.Header:
        """A 2-D celestial FITS header of the grid."""
        header = fits.Header()
        header["NAXIS"] = 2
        header["NAXIS1"], header["NAXIS2"] = self.nx, self.ny
        header["CTYPE1"], header["CTYPE2"] = f"RA---{self.projection}", f"DEC--{self.projection}"
        header["CRVAL1"], header["CRVAL2"] = self.ra_deg, self.dec_deg
        header["CRPIX1"], header["CRPIX2"] = self.crpix1, self.crpix2
        header["CDELT1"], header["CDELT2"] = -self.cell_deg, self.cell_deg
        header["CUNIT1"], header["CUNIT2"] = "deg", "deg"
        header["RADESYS"] = "ICRS"
        header["EQUINOX"] = 2000.0
        return header

    def wcs(self) -> WCS:
        return WCS(self.header())

    def tiles(self, size: int) -> list[tuple[int, int, int, int]]:
        """Output tiles ``(y0, y1, x0, x1)`` of at most ``size`` pixels a side."""
        return [(y, min(y + size, self.ny), x, min(x + size, self.nx))
                for y in range(0, self.ny, size) for x in range(0, self.nx, size)]

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MosaicGrid:
        return cls(**values)


def grid_covering(ra_deg: ArrayLike, dec_deg: ArrayLike, cell_deg: float,
                  projection: str = "SIN", margin_px: int = 2) -> MosaicGrid:
    """The smallest grid about the directions' mean direction that holds every direction
    (with ``margin_px`` to spare on each side).

    Raises
    ------
    ValueError
        Unknown projection, no directions, no mean direction, or a direction the projection
        cannot reach (SIN: more than 90 deg from the centre).
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection {projection!r}: choose one of {', '.join(PROJECTIONS)}")
    ra, dec = np.ravel(np.asarray(ra_deg, float)), np.ravel(np.asarray(dec_deg, float))
    if ra.size == 0:
        raise ValueError("no directions to cover")
    centre = mean_direction(ra, dec)
    probe = MosaicGrid(centre[0], centre[1], cell_deg, 1, 1, 1.0, 1.0, projection).wcs()
    x, y = probe.wcs_world2pix(ra, dec, 0)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"the inputs reach more than the {projection} projection can hold "
                         "about their mean direction: mosaic them in pieces or use CAR")
    x0, y0 = int(np.floor(x.min())) - margin_px, int(np.floor(y.min())) - margin_px
    x1, y1 = int(np.ceil(x.max())) + margin_px, int(np.ceil(y.max())) + margin_px
    return MosaicGrid(centre[0], centre[1], cell_deg, x1 - x0 + 1, y1 - y0 + 1,
                      float(1 - x0), float(1 - y0), projection)
