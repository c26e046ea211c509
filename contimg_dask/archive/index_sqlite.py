"""The archive index in the state store's SQLite file: its own tables (``archive_products``,
``archive_meta``), never touched by the state store.

Each row keeps the entry's JSON without its provenance (``doc``: what a search returns) and
the provenance apart (``provenance``: what :meth:`SqliteArchiveIndex.get` adds). The cone
search narrows by sky cell (sky_cells.py, indexed with the start time) and then
tests the unit-vector dot product in SQL; time ranges use the start-time index, widened by
the longest product span seen (kept in ``archive_meta``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contimg_dask.archive.records import ArchiveEntry, SearchQuery, unit_vector
from contimg_dask.archive.sky_cells import cell_of, cone_cells
from contimg_dask.errors import StateError, StateUnavailableError

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS archive_products (product_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL, block_id TEXT, collection TEXT NOT NULL, cell TEXT NOT NULL,
        x REAL NOT NULL, y REAL NOT NULL, z REAL NOT NULL, strip_dec_deg REAL NOT NULL,
        time_start REAL NOT NULL, time_end REAL NOT NULL, noise_jy REAL, doc TEXT NOT NULL,
        provenance TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS archive_cell_time ON archive_products (cell, time_start)",
    "CREATE INDEX IF NOT EXISTS archive_time ON archive_products (time_start)",
    "CREATE INDEX IF NOT EXISTS archive_kind_time ON archive_products (kind, time_start)",
    "CREATE INDEX IF NOT EXISTS archive_strip ON archive_products (strip_dec_deg)",
    "CREATE INDEX IF NOT EXISTS archive_collection ON archive_products (collection)",
    "CREATE TABLE IF NOT EXISTS archive_meta (key TEXT PRIMARY KEY, value REAL NOT NULL)",
)


def _row(entry: ArchiveEntry) -> tuple[Any, ...]:
    x, y, z = unit_vector(entry.ra_deg, entry.dec_deg)
    doc = entry.to_dict()
    provenance = doc.pop("provenance")
    return (entry.product_id, entry.kind, entry.block_id, entry.collection,
            cell_of(entry.ra_deg, entry.dec_deg), x, y, z, entry.strip_dec_deg,
            entry.time_start, entry.time_end, entry.noise_jy, json.dumps(doc),
            json.dumps(provenance))


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
        rows = [_row(e) for e in entries]
        if not rows:
            return 0
        span = max(r[10] - r[9] for r in rows)
        try:
            with self._transaction() as conn:
                conn.executemany("INSERT OR REPLACE INTO archive_products VALUES "
                                 "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                conn.execute("INSERT INTO archive_meta VALUES ('max_span_s', ?) ON CONFLICT "
                             "(key) DO UPDATE SET value = max(value, excluded.value)", (span,))
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        return len(rows)

    def get(self, product_id: str) -> ArchiveEntry | None:
        rows = self._query("SELECT doc, provenance FROM archive_products WHERE "
                           "product_id = ?", (product_id,))
        if not rows:
            return None
        return ArchiveEntry.from_dict({**json.loads(rows[0][0]),
                                       "provenance": json.loads(rows[0][1])})

    def remove(self, product_id: str) -> bool:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM archive_products WHERE product_id = ?",
                                (product_id,)).rowcount > 0

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM archive_products")[0][0])

    def collections(self) -> dict[str, int]:
        return dict(self._query("SELECT collection, count(*) FROM archive_products "
                                "GROUP BY collection ORDER BY collection"))

    def _max_span(self) -> float:
        rows = self._query("SELECT value FROM archive_meta WHERE key = 'max_span_s'")
        return float(rows[0][0]) if rows else 0.0

    def search(self, query: SearchQuery) -> list[ArchiveEntry]:
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
        sql = ("SELECT doc FROM archive_products" + (" WHERE " + " AND ".join(where)
                                                     if where else "")
               + " ORDER BY time_start, product_id")
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return [ArchiveEntry.from_dict(json.loads(doc)) for (doc,) in self._query(sql, params)]


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
