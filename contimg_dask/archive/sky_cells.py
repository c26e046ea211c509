"""Sky cells for the cone index: declination bands of :data:`BAND_DEG`, each cut into RA
bins about as wide on the sky as the band is high. A product's centre falls in one cell; a
cone touches the few cells :func:`cone_cells` returns, whose products are then tested
exactly by the unit-vector dot product (``p . c >= cos(radius)``).

Cells are named ``<band>:<bin>`` (integers). Both index backends use them: SQLite as an
indexed column, Redis as one sorted set per cell (scored by time).
"""

from __future__ import annotations

import math

#: Height of a declination band (deg). DSA-110 strips are a few degrees wide and a product's
#: centre is a point: 1 deg keeps a 1-deg cone to a handful of cells.
BAND_DEG = 1.0
N_BANDS = round(180.0 / BAND_DEG)


def _band(dec_deg: float) -> int:
    return min(N_BANDS - 1, max(0, math.floor((dec_deg + 90.0) / BAND_DEG)))


def bins_in_band(band: int) -> int:
    """RA bins of ``band``: 360 deg times the cosine of its edge nearer the equator, over
    :data:`BAND_DEG` (at least 1)."""
    low = -90.0 + band * BAND_DEG
    nearest = min(abs(low), abs(low + BAND_DEG)) if low * (low + BAND_DEG) > 0 else 0.0
    return max(1, math.floor(360.0 * math.cos(math.radians(nearest)) / BAND_DEG))


def cell_of(ra_deg: float, dec_deg: float) -> str:
    """The cell holding direction (RA, Dec) in degrees."""
    band = _band(dec_deg)
    n = bins_in_band(band)
    return f"{band}:{math.floor((ra_deg % 360.0) / 360.0 * n) % n}"


def cone_cells(ra_deg: float, dec_deg: float, radius_deg: float) -> list[str]:
    """Every cell that may hold a direction within ``radius_deg`` of (RA, Dec) (a superset:
    the caller tests the dot product)."""
    dec_low, dec_high = dec_deg - radius_deg, dec_deg + radius_deg
    cells = []
    for band in range(_band(dec_low), _band(dec_high) + 1):
        n = bins_in_band(band)
        if dec_high >= 90.0 or dec_low <= -90.0:
            half_width = 180.0
        else:
            # The cone's RA half-width at its widest (Dec of the tangent point).
            ratio = math.sin(math.radians(radius_deg)) / math.cos(math.radians(dec_deg))
            half_width = 180.0 if ratio >= 1.0 else math.degrees(math.asin(ratio))
        if half_width >= 180.0 or n == 1:
            cells += [f"{band}:{i}" for i in range(n)]
            continue
        width = 360.0 / n
        first = math.floor((ra_deg - half_width) / width)
        last = math.floor((ra_deg + half_width) / width)
        cells += [f"{band}:{i % n}" for i in sorted({j % n for j in range(first, last + 1)})]
    return cells
