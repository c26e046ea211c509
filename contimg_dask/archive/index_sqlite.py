"""The archive index in the state store's SQLite file: its own tables
(``archive_entries``, ``archive_provenance``, ``archive_meta``), never touched by the state
store.

``archive_entries`` holds one row per product: the entry's fields as columns (what a search
returns, as tuples), its sky cell and unit vector; the provenance is apart
(``archive_provenance``: what :meth:`SqliteArchiveIndex.get` adds). A cone search reads the
covering index ``archive_cone`` (cell, start, end, unit vector): the cells' time range is
scanned and the dot product and end-time tests run on the index alone, so that only matching
rows are read from the table. Time ranges use the start-time index, widened by the longest
product span seen (kept in ``archive_meta``). The index is derived data: tables of an older
layout are dropped and ``contimg archive sync`` fills the new ones.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contimg_dask.archive.records import (
    SEARCH_FIELDS,
    ArchiveEntry,
    SearchQuery,
    SearchResult,
    search_row,
    unit_vector,
)
from contimg_dask.archive.sky_cells import cell_of, cone_cells
from contimg_dask.errors import StateError, StateUnavailableError

_COLUMN_TYPES = {"ra_deg": "REAL NOT NULL", "dec_deg": "REAL NOT NULL",
                 "strip_dec_deg": "REAL NOT NULL", "time_start": "REAL NOT NULL",
                 "time_end": "REAL NOT NULL", "noise_jy": "REAL", "flag_fraction": "REAL",
                 "n_antennas": "INTEGER", "indexed_at": "REAL NOT NULL",
                 "product_id": "TEXT PRIMARY KEY", "kind": "TEXT NOT NULL",
                 "path": "TEXT NOT NULL", "collection": "TEXT NOT NULL"}
_COLUMNS = ", ".join(SEARCH_FIELDS)
SCHEMA = (
    "DROP TABLE IF EXISTS archive_products",  # the first layout (entries as JSON)
    "CREATE TABLE IF NOT EXISTS archive_entries ("
    + ", ".join(f"{name} {_COLUMN_TYPES.get(name, 'TEXT')}" for name in SEARCH_FIELDS)
    + ", cell TEXT NOT NULL, x REAL NOT NULL, y REAL NOT NULL, z REAL NOT NULL)",
    """CREATE TABLE IF NOT EXISTS archive_provenance (product_id TEXT PRIMARY KEY,
        provenance TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS archive_cone ON archive_entries "
    "(cell, time_start, time_end, x, y, z)",
    "CREATE INDEX IF NOT EXISTS archive_time ON archive_entries (time_start)",
    "CREATE INDEX IF NOT EXISTS archive_kind_time ON archive_entries (kind, time_start)",
    "CREATE INDEX IF NOT EXISTS archive_strip ON archive_entries (strip_dec_deg)",
    "CREATE INDEX IF NOT EXISTS archive_collection ON archive_entries (collection)",
    "CREATE TABLE IF NOT EXISTS archive_meta (key TEXT PRIMARY KEY, value REAL NOT NULL)",
)
_INSERT = (f"INSERT OR REPLACE INTO archive_entries ({_COLUMNS}, cell, x, y, z) VALUES "
           f"({', '.join('?' * (len(SEARCH_FIELDS) + 4))})")


def _row(entry: ArchiveEntry) -> tuple[Any, ...]:
    return (*search_row(entry), cell_of(entry.ra_deg, entry.dec_deg),
            *unit_vector(entry.ra_deg, entry.dec_deg))


class SqliteArchiveIndex:
    """:class:`~contimg_dask.archive.index.ArchiveIndex` in a SQLite file (WAL mode, shared
    with the state store)."""

    backend = "sqlite"

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000.0,
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            with self._transaction() as conn:
                for statement in SCHEMA:
                    conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.DatabaseError) -> StateError:
        if "locked" in str(exc) or "busy" in str(exc):
            return StateUnavailableError(f"archive index locked: {exc}", file=self.path)
        return StateError(f"archive index: {exc}", file=self.path)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc

    def close(self) -> None:
        self._conn.close()

    def add(self, entries: Iterable[ArchiveEntry]) -> int:
        entries = list(entries)
        if not entries:
            return 0
        span = max(e.time_end - e.time_start for e in entries)
        try:
            with self._transaction() as conn:
                conn.executemany(_INSERT, [_row(e) for e in entries])
                conn.executemany("INSERT OR REPLACE INTO archive_provenance VALUES (?, ?)",
                                 [(e.product_id, json.dumps(e.provenance)) for e in entries])
                conn.execute("INSERT INTO archive_meta VALUES ('max_span_s', ?) ON CONFLICT "
                             "(key) DO UPDATE SET value = max(value, excluded.value)", (span,))
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        return len(entries)

    def get(self, product_id: str) -> ArchiveEntry | None:
        rows = self._query(f"SELECT {_COLUMNS}, coalesce(p.provenance, '{{}}') FROM "
                           "archive_entries LEFT JOIN archive_provenance AS p USING "
                           "(product_id) WHERE product_id = ?", (product_id,))
        if not rows:
            return None
        return ArchiveEntry(**dict(zip(SEARCH_FIELDS, rows[0], strict=False)),
                            provenance=json.loads(rows[0][-1]))

    def remove(self, product_id: str) -> bool:
        with self._transaction() as conn:
            conn.execute("DELETE FROM archive_provenance WHERE product_id = ?", (product_id,))
            return conn.execute("DELETE FROM archive_entries WHERE product_id = ?",
                                (product_id,)).rowcount > 0

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM archive_entries")[0][0])

    def collections(self) -> dict[str, int]:
        return dict(self._query("SELECT collection, count(*) FROM archive_entries "
                                "GROUP BY collection ORDER BY collection"))

    def _max_span(self) -> float:
        rows = self._query("SELECT value FROM archive_meta WHERE key = 'max_span_s'")
        return float(rows[0][0]) if rows else 0.0

    def search(self, query: SearchQuery) -> SearchResult:
        where: list[str] = []
        params: list[Any] = []
        if query.cone is not None:
            ra, dec, radius = query.cone
            cells = cone_cells(ra, dec, radius)
            where.append(f"cell IN ({', '.join('?' * len(cells))})")
            params += cells
            cx, cy, cz = unit_vector(ra, dec)
            where.append("x * ? + y * ? + z * ? >= ?")
            params += [cx, cy, cz, math.cos(math.radians(radius))]
        if query.time_from is not None:
            where.append("time_end >= ? AND time_start >= ?")
            params += [query.time_from, query.time_from - self._max_span()]
        if query.time_to is not None:
            where.append("time_start <= ?")
            params.append(query.time_to)
        if query.strip_dec_deg is not None:
            where.append("strip_dec_deg BETWEEN ? AND ?")
            params += [query.strip_dec_deg - query.strip_tolerance_deg,
                       query.strip_dec_deg + query.strip_tolerance_deg]
        if query.kind is not None:
            where.append("kind = ?")
            params.append(query.kind)
        if query.max_noise_jy is not None:
            where.append("noise_jy <= ?")
            params.append(query.max_noise_jy)
        condition = " WHERE " + " AND ".join(where) if where else ""
        sql = f"SELECT {_COLUMNS} FROM archive_entries{condition} ORDER BY time_start, product_id"
        if query.limit is None and query.offset == 0:
            return SearchResult(self._query(sql, params))
        rows = self._query(f"{sql} LIMIT ? OFFSET ?", [*params, -1 if query.limit is None
                                                        else query.limit, query.offset])
        if query.offset == 0 and len(rows) < (query.limit or 0):
            return SearchResult(rows)
        total = self._query(f"SELECT count(*) FROM archive_entries{condition}", params)
        return SearchResult(rows, total=int(total[0][0]))


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) under the index's lock."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self.conn, self.lock = conn, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.conn

    def __exit__(self, kind: type | None, *_: object) -> None:
        try:
            self.conn.execute("ROLLBACK" if kind is not None else "COMMIT")
        finally:
            self.lock.release()
