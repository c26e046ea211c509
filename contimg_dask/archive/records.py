"""What the archive index holds: one :class:`ArchiveEntry` per product, and the
:class:`SearchQuery` both index backends answer.

Angles are ICRS degrees, times Unix seconds (UTC). A product is identified by its
``product_id``: ``<block_id>/<kind>`` for a block's products (``2026-01-15T12:00:00/ms``),
``<kind>/<name>`` for products of many blocks (mosaics, light curves).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

#: Kinds that hold visibilities (the block store and its exports): their collection is the
#: observation itself; every other kind is a processed product with a collection of its own.
VISIBILITY_KINDS = ("block_store", "ms", "uvfits", "miriad", "uvh5")


def product_id(block_id: str | None, kind: str, name: str | None = None) -> str:
    """The archive's name of a product: ``<block_id>/<kind>``, or ``<kind>/<name>`` for a
    product of many blocks."""
    if block_id:
        return f"{block_id}/{kind}"
    if not name:
        raise ValueError("a product without a block needs a name")
    return f"{kind}/{name}"


def strip_label(dec_deg: float) -> str:
    """The survey strip's name: the pointing declination to 0.1 deg, signed (``+37.2``)."""
    return f"{dec_deg:+.1f}"


def observing_day(unix_s: float) -> str:
    """The UTC date (``YYYY-MM-DD``) of ``unix_s``."""
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%d")


def collection_of(kind: str, strip_dec_deg: float, time_start: float,
                  block_id: str | None) -> str:
    """The collection path of a product: ``strip/<strip>/<day>/<block>`` for the block's
    visibilities, ``products/<kind>/<strip>/<day>`` for processed products."""
    strip, day = strip_label(strip_dec_deg), observing_day(time_start)
    if kind in VISIBILITY_KINDS:
        return f"strip/{strip}/{day}/{block_id or '-'}"
    return f"products/{kind}/{strip}/{day}"


def unit_vector(ra_deg: float, dec_deg: float) -> tuple[float, float, float]:
    """The ICRS unit vector of a direction (degrees)."""
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    return (math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec))


@dataclass(frozen=True)
class ArchiveEntry:
    """One product in the archive.

    ``ra_deg``/``dec_deg``: the product's centre (ICRS, degrees): the phase centre of a
    block's visibilities, an image's reference pixel. ``strip_dec_deg``: the pointing
    declination of the survey strip. ``time_start``/``time_end``: the span of the data
    (Unix s). ``noise_jy``: an image's measured noise (Jy/beam), None for other kinds.
    ``flag_fraction``: the fraction of visibilities flagged. ``checksum``: SHA-256 of the
    product's content as recorded (by its stage, or by the archive when indexing).
    ``provenance``: the recording stage's provenance (inputs, configuration hash, package
    versions, command) plus ``input_fingerprints`` taken when indexed.
    """

    product_id: str
    kind: str
    path: str
    block_id: str | None
    collection: str
    ra_deg: float
    dec_deg: float
    strip_dec_deg: float
    time_start: float
    time_end: float
    noise_jy: float | None = None
    flag_fraction: float | None = None
    calibrator: str | None = None
    n_antennas: int | None = None
    stage: str | None = None
    checksum: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    indexed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``provenance`` copied one level deep)."""
        out = {name: getattr(self, name) for name in _ENTRY_FIELD_ORDER}
        out["provenance"] = dict(self.provenance)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchiveEntry:
        """The entry of ``to_dict()`` output (keys it does not know are ignored)."""
        if data.keys() <= _ENTRY_FIELDS:
            return cls(**data)
        return cls(**{k: v for k, v in data.items() if k in _ENTRY_FIELDS})


_ENTRY_FIELD_ORDER = tuple(f.name for f in dataclasses.fields(ArchiveEntry))
_ENTRY_FIELDS = frozenset(_ENTRY_FIELD_ORDER)
#: The columns of a search result row, in order: every entry field but the provenance.
SEARCH_FIELDS = tuple(name for name in _ENTRY_FIELD_ORDER if name != "provenance")
#: Positions in a search row of the fields the sort and the exact tests use.
ROW = {name: i for i, name in enumerate(SEARCH_FIELDS)}


def search_row(entry: ArchiveEntry) -> tuple[Any, ...]:
    """``entry``'s values in :data:`SEARCH_FIELDS` order."""
    return tuple(getattr(entry, name) for name in SEARCH_FIELDS)


def row_order(row: Sequence[Any]) -> tuple[float, str]:
    """The order of search results: start time, then product id."""
    return row[ROW["time_start"]], row[ROW["product_id"]]


class SearchResult(Sequence[ArchiveEntry]):
    """What a search found: ``rows`` (tuples in :data:`SEARCH_FIELDS` order, oldest
    first; what the indexes return, cheap for thousands of products) and ``total``, the
    number of matches before the query's ``offset``/``limit`` cut them. Indexing or iterating
    gives :class:`ArchiveEntry` objects (built on access, without their provenance)."""

    __slots__ = ("rows", "total")

    def __init__(self, rows: list[Sequence[Any]], total: int | None = None) -> None:
        self.rows = rows
        self.total = len(rows) if total is None else total

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> ArchiveEntry: ...

    @overload
    def __getitem__(self, i: slice) -> list[ArchiveEntry]: ...

    def __getitem__(self, i: int | slice) -> ArchiveEntry | list[ArchiveEntry]:
        if isinstance(i, slice):
            return [self._entry(r) for r in self.rows[i]]
        return self._entry(self.rows[i])

    @staticmethod
    def _entry(row: Sequence[Any]) -> ArchiveEntry:
        return ArchiveEntry(**dict(zip(SEARCH_FIELDS, row, strict=True)))

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as JSON-ready dicts (``ArchiveEntry.to_dict()`` keys, ``provenance``
        empty)."""
        out = []
        for row in self.rows:
            entry = dict(zip(SEARCH_FIELDS, row, strict=True))
            entry["provenance"] = {}
            out.append(entry)
        return out


@dataclass(frozen=True)
class SearchQuery:
    """A search of the archive; every criterion given must hold.

    ``cone``: (RA, Dec, radius) in degrees: the product's centre lies within ``radius`` of
    (RA, Dec). ``time_from``/``time_to`` (Unix s): the product's span overlaps the interval.
    ``strip_dec_deg``: the strip's declination is within ``strip_tolerance_deg``. ``kind``:
    the product kind. ``max_noise_jy``: products with a measured noise at most this (those
    without a noise are excluded when it is given). ``limit``: most results, oldest first.
    """

    cone: tuple[float, float, float] | None = None
    time_from: float | None = None
    time_to: float | None = None
    strip_dec_deg: float | None = None
    strip_tolerance_deg: float = 0.5
    kind: str | None = None
    max_noise_jy: float | None = None
    limit: int | None = None
    offset: int = 0

    def __post_init__(self) -> None:
        if self.cone is not None:
            ra, dec, radius = self.cone
            if not (-90.0 <= dec <= 90.0 and 0.0 <= radius <= 180.0 and math.isfinite(ra)):
                raise ValueError(f"cone ({ra}, {dec}, {radius}) deg: Dec in [-90, 90] and "
                                 "radius in [0, 180] needed")
        if self.offset < 0 or (self.limit is not None and self.limit < 0):
            raise ValueError(f"offset ({self.offset}) and limit ({self.limit}) must not be "
                             "negative")
        if (self.time_from is not None and self.time_to is not None
                and self.time_to < self.time_from):
            raise ValueError(f"time range ends ({self.time_to}) before it starts "
                             f"({self.time_from})")

    def page(self, rows: list[Sequence[Any]]) -> SearchResult:
        """The page of ``rows`` (every match, in result order) this query asks for."""
        end = None if self.limit is None else self.offset + self.limit
        return SearchResult(rows[self.offset:end], total=len(rows))
