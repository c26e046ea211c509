"""The archive index contract, run against both backends (SQLite file, real redis-server):
idempotent adds, replacement, removal, collections, and every search criterion compared
with a brute-force search whose cone test is astropy's angular separation."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from collections.abc import Callable

import numpy as np
import pytest
import redis
from astropy import units as u
from astropy.coordinates import SkyCoord

from contimg_dask.archive.index import ArchiveIndex, open_archive_index
from contimg_dask.archive.records import ArchiveEntry, SearchQuery, collection_of
from contimg_dask.archive.sky_cells import cell_of, cone_cells
from contimg_dask.config import PipelineConfig
from contimg_dask.state import open_state_store, sqlite_path

T0 = 1.78e9  # 2026-05-29, Unix s
KINDS = ("block_store", "ms", "image", "solutions")


def synthetic_entries(n: int, seed: int = 3) -> list[ArchiveEntry]:
    """Products along four strips (one through the pole's neighbourhood), RA over the whole
    circle including the wrap at 0/360, 300 s blocks over ten days."""
    rng = np.random.default_rng(seed)
    strips = np.array([-20.0, 16.1, 71.6, 88.5])
    out = []
    for i in range(n):
        strip = float(strips[i % len(strips)])
        dec = float(np.clip(strip + rng.normal(0, 0.6), -90, 90))
        ra = float(rng.uniform(0, 360) if i % 7 else rng.uniform(359.5, 360.0) % 360.0)
        t = T0 + float(rng.uniform(0, 10 * 86400))
        kind = KINDS[(i // len(strips)) % len(KINDS)]
        block = f"b{i:05d}"
        out.append(ArchiveEntry(
            product_id=f"{block}/{kind}", kind=kind, path=f"/p/{block}.{kind}",
            block_id=block, collection=collection_of(kind, strip, t, block),
            ra_deg=ra, dec_deg=dec, strip_dec_deg=strip, time_start=t,
            time_end=t + (309.0 if kind != "solutions" else 86400.0),
            noise_jy=float(rng.uniform(1e-4, 1e-2)) if kind == "image" else None))
    return out


def brute_force(entries: list[ArchiveEntry], query: SearchQuery) -> list[str]:
    keep = np.ones(len(entries), bool)
    if query.cone is not None:
        ra, dec, radius = query.cone
        centre = SkyCoord(ra * u.deg, dec * u.deg)
        points = SkyCoord([e.ra_deg for e in entries] * u.deg,
                          [e.dec_deg for e in entries] * u.deg)
        keep &= centre.separation(points).deg <= radius
    for i, e in enumerate(entries):
        if query.time_from is not None and e.time_end < query.time_from:
            keep[i] = False
        if query.time_to is not None and e.time_start > query.time_to:
            keep[i] = False
        if query.strip_dec_deg is not None and abs(
                e.strip_dec_deg - query.strip_dec_deg) > query.strip_tolerance_deg:
            keep[i] = False
        if query.kind is not None and e.kind != query.kind:
            keep[i] = False
        if query.max_noise_jy is not None and (e.noise_jy is None
                                               or e.noise_jy > query.max_noise_jy):
            keep[i] = False
    chosen = [e for e, k in zip(entries, keep, strict=True) if k]
    return [e.product_id for e in sorted(chosen, key=lambda e: (e.time_start, e.product_id))]


QUERIES = [
    SearchQuery(cone=(120.0, 16.1, 5.0)),
    SearchQuery(cone=(359.8, -20.0, 2.0)),          # across RA 0/360
    SearchQuery(cone=(10.0, 89.0, 3.0)),            # the cone holds the pole
    SearchQuery(cone=(200.0, 71.6, 8.0), time_from=T0 + 2 * 86400, time_to=T0 + 5 * 86400),
    SearchQuery(time_from=T0 + 86400, time_to=T0 + 86400 + 3600),
    SearchQuery(time_from=T0 + 9.5 * 86400),        # open-ended; solutions span a day
    SearchQuery(strip_dec_deg=16.0, kind="image", max_noise_jy=3e-3),
    SearchQuery(kind="solutions", time_to=T0 + 86400),
    SearchQuery(cone=(45.0, -20.0, 30.0), kind="ms", limit=5),
    SearchQuery(strip_dec_deg=71.6, strip_tolerance_deg=0.01),
]


def test_search_agrees_with_brute_force(index: ArchiveIndex) -> None:
    entries = synthetic_entries(2000)
    assert index.add(entries) == len(entries)
    assert index.count() == len(entries)
    for query in QUERIES:
        expected = brute_force(entries, query)
        if query.limit is not None:
            expected = expected[:query.limit]
        got = [e.product_id for e in index.search(query)]
        assert got == expected, query
    # Pages: the matches after ``offset``, at most ``limit``, and the count of them all.
    for query in (QUERIES[0], QUERIES[4], QUERIES[6]):
        expected = brute_force(entries, query)
        assert len(expected) > 5
        page = index.search(dataclasses.replace(query, offset=2, limit=3))
        assert [e.product_id for e in page] == expected[2:5]
        assert page.total == len(expected) == index.search(query).total
        assert [d["product_id"] for d in page.dicts()] == expected[2:5]
    # The queries are not vacuous: every one selects something and none selects everything.
    sizes = [len(brute_force(entries, q)) for q in QUERIES]
    assert min(sizes) > 0 and max(sizes) < len(entries)


def test_add_is_idempotent_and_replaces(index: ArchiveIndex) -> None:
    entries = synthetic_entries(40)
    index.add(entries)
    index.add(entries)
    assert index.count() == 40
    assert sum(index.collections().values()) == 40
    provenance = {"command": "contimg image /s/b.zarr --out /p", "inputs": ["/s/b.zarr"],
                  "versions": {"casatasks": "6.7.0"}, "input_fingerprints": {"/s/b.zarr": "ab"}}
    moved = ArchiveEntry.from_dict({**entries[0].to_dict(), "ra_deg": 300.0, "dec_deg": -45.0,
                                    "kind": "image", "noise_jy": 1e-3,
                                    "collection": "products/image/x", "provenance": provenance})
    index.add([moved])
    assert index.count() == 40
    assert index.get(moved.product_id) == moved  # whole, with its provenance
    (found,) = index.search(SearchQuery(cone=(300.0, -45.0, 0.1)))
    assert found.product_id == moved.product_id and found.provenance == {}
    assert found == ArchiveEntry.from_dict({**moved.to_dict(), "provenance": {}})
    assert moved.product_id not in [e.product_id for e in index.search(
        SearchQuery(cone=(entries[0].ra_deg, entries[0].dec_deg, 0.01)))]
    assert index.collections()["products/image/x"] == 1
    assert sum(index.collections().values()) == 40


def test_remove(index: ArchiveIndex) -> None:
    entries = synthetic_entries(10)
    index.add(entries)
    assert index.remove(entries[3].product_id)
    assert not index.remove(entries[3].product_id)
    assert index.get(entries[3].product_id) is None
    assert index.count() == 9
    assert entries[3].product_id not in [e.product_id for e in index.search(SearchQuery())]
    assert sum(index.collections().values()) == 9


def test_bad_query_is_refused() -> None:
    with pytest.raises(ValueError, match="radius"):
        SearchQuery(cone=(10.0, 95.0, 1.0))
    with pytest.raises(ValueError, match="before it starts"):
        SearchQuery(time_from=T0, time_to=T0 - 1)


def test_cone_cells_hold_every_point_of_the_cone() -> None:
    """Random points within the cone (drawn by rotating offsets about the centre) always
    fall in one of the cells cone_cells returns."""
    rng = np.random.default_rng(5)
    for ra, dec, radius in [(0.1, 0.0, 1.0), (180.0, 60.0, 4.0), (33.0, -89.2, 1.5),
                            (270.0, 85.0, 10.0), (359.9, 30.0, 0.2)]:
        cells = set(cone_cells(ra, dec, radius))
        centre = SkyCoord(ra * u.deg, dec * u.deg)
        offsets = centre.directional_offset_by(
            rng.uniform(0, 360, 3000) * u.deg,
            np.sqrt(rng.uniform(0, 1, 3000)) * radius * u.deg)
        for p_ra, p_dec in zip(offsets.ra.deg, offsets.dec.deg, strict=True):
            assert cell_of(p_ra, p_dec) in cells, (ra, dec, radius, p_ra, p_dec)
        assert len(cells) < 200 or radius > 5 or abs(dec) > 80
    assert math.isclose(len(cone_cells(100.0, 0.0, 0.4)), 2, abs_tol=2)


def test_an_older_layout_is_dropped_when_opened(store_config: Callable[..., PipelineConfig],
                                                backend: str) -> None:
    """The index is derived data: what an older layout left (SQLite's first table of JSON
    entries, Redis keys of another layout) is removed on opening, and the index works."""
    config = store_config()
    open_state_store(config).close()
    if backend == "sqlite":
        with sqlite3.connect(sqlite_path(config)) as conn:
            conn.execute("CREATE TABLE archive_products (product_id TEXT, doc TEXT)")
            conn.execute("INSERT INTO archive_products VALUES ('b/ms', '{}')")
    else:
        old = redis.Redis.from_url(config.state.url, decode_responses=True)
        prefix = f"contimg:{{{config.state.instance}}}:archive:"
        old.hset(prefix + "entries", "b/ms", json.dumps({"product_id": "b/ms"}))
        old.hset(prefix + "pos", "b/ms", "1 0 0 2e9")
        old.hset(prefix + "meta", "layout", "1")
    index = open_archive_index(config)
    try:
        assert index.count() == 0
        if backend == "sqlite":
            with sqlite3.connect(sqlite_path(config)) as conn:
                assert not conn.execute("SELECT name FROM sqlite_master WHERE name = "
                                        "'archive_products'").fetchall()
        else:
            assert old.hget(prefix + "pos", "b/ms") is None
        entries = synthetic_entries(20)
        index.add(entries)
        assert [e.product_id for e in index.search(QUERIES[0])] == brute_force(entries,
                                                                              QUERIES[0])
    finally:
        index.close()
