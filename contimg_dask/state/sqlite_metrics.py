"""The SQLite state store's monitor points: raw samples, per-minute and per-block
aggregates, their series and their retention (a part of :class:`SqliteStateStore`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from contimg_dask.config.schema import StateConfig
from contimg_dask.state.records import MINUTE_S, MetricPoint, MetricRate, MetricSample

DAY_S = 86400.0


class SqliteMetrics:
    """The metric methods of the state store protocol, over the store's own connection
    helpers, which :class:`SqliteStateStore` defines: ``_write()`` (a write transaction)
    and ``_read(sql, params)`` (a query)."""

    settings: StateConfig
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _read: Callable[..., list[tuple]]

    def record_metrics(self, samples: Iterable[MetricSample]) -> None:
        rows = [(s.name, s.at, float(s.value), s.block_id) for s in samples]
        with self._write() as conn:
            conn.executemany("INSERT INTO metric_raw VALUES (?, ?, ?, ?)", rows)
            conn.executemany(
                "INSERT INTO metric_minute VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT "
                "(name, minute) DO UPDATE SET sum = sum + excluded.sum, count = count + 1, "
                "min = min(min, excluded.min), max = max(max, excluded.max)",
                [(n, int(at // MINUTE_S) * MINUTE_S, v, v, v) for n, at, v, _ in rows])
            conn.executemany(
                "INSERT INTO metric_block VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT "
                "(name, block_id) DO UPDATE SET sum = sum + excluded.sum, "
                "count = count + 1, min = min(min, excluded.min), "
                "max = max(max, excluded.max), last_at = max(last_at, excluded.last_at)",
                [(n, b, v, v, v, at) for n, at, v, b in rows if b is not None])

    def metric_names(self) -> list[str]:
        return [r[0] for r in self._read("SELECT DISTINCT name FROM metric_minute UNION "
                                         "SELECT DISTINCT name FROM metric_block ORDER BY 1")]

    def metric_series(self, name: str, rate: MetricRate, since: float | None = None,
                      until: float | None = None) -> list[MetricPoint]:
        low = -1e300 if since is None else since
        high = 1e300 if until is None else until
        if rate == "raw":
            rows = self._read("SELECT at, value FROM metric_raw WHERE name = ? AND at >= ? "
                              "AND at <= ? ORDER BY at", (name, low, high))
            return [MetricPoint(name, at, v, v, v, 1) for at, v in rows]
        if rate == "minute":
            rows = self._read("SELECT minute, sum, count, min, max FROM metric_minute WHERE "
                              "name = ? AND minute >= ? AND minute <= ? ORDER BY minute",
                              (name, low - MINUTE_S, high))
            rows = [r for r in rows if r[0] + MINUTE_S > low]
        else:
            rows = self._read("SELECT block_id, sum, count, min, max FROM metric_block WHERE "
                              "name = ? AND last_at >= ? AND last_at <= ? ORDER BY block_id",
                              (name, low, high))
        return [MetricPoint(name, k, s / c, lo, hi, c) for k, s, c, lo, hi in rows]

    def prune(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        keep = self.settings.retention
        removed = {}
        with self._write() as conn:
            for label, days, sql in (
                    ("raw", keep.raw_days, "DELETE FROM metric_raw WHERE at < ?"),
                    ("minute", keep.minute_days, "DELETE FROM metric_minute WHERE minute < ?"),
                    ("block", keep.block_days, "DELETE FROM metric_block WHERE last_at < ?"),
                    ("events", keep.events_days, "DELETE FROM events WHERE at < ?")):
                removed[label] = 0 if days is None else conn.execute(
                    sql, (now - days * DAY_S,)).rowcount
        return removed

    def metric_aggregates(self, rate: MetricRate) -> list[dict[str, Any]]:
        if rate == "minute":
            rows = self._read("SELECT name, minute, sum, count, min, max FROM metric_minute")
            return [dict(zip(("name", "minute", "sum", "count", "min", "max"), r, strict=True))
                    for r in rows]
        rows = self._read("SELECT name, block_id, sum, count, min, max, last_at "
                          "FROM metric_block")
        return [dict(zip(("name", "block_id", "sum", "count", "min", "max", "last_at"), r,
                         strict=True)) for r in rows]

    def raw_samples(self) -> list[MetricSample]:
        return [MetricSample(*r) for r in self._read(
            "SELECT name, value, at, block_id FROM metric_raw ORDER BY at")]
