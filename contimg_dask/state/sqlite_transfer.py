"""Seed an empty SQLite state store from a dump (``contimg state import``; the dump format
is in transfer.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from contimg_dask.errors import StateError
from contimg_dask.state.transfer import check_dump, stage_rows


def _rows(records: list[dict[str, Any]], columns: tuple[str, ...]) -> list[tuple]:
    return [tuple(r.get(c) for c in columns) for r in records]


def load_dump(conn: sqlite3.Connection, dump: dict[str, Any], path: Path) -> None:
    """Insert everything in ``dump`` (inside the caller's write transaction)."""
    check_dump(dump, str(path))
    if conn.execute("SELECT count(*) FROM stages").fetchone()[0] or conn.execute(
            "SELECT count(*) FROM blocks").fetchone()[0]:
        raise StateError("import needs an empty state store", file=path)
    conn.executemany("INSERT INTO files VALUES (?, ?, ?, ?)", _rows(
        dump["files"], ("path", "block_id", "subband", "registered_at")))
    conn.executemany("INSERT INTO blocks VALUES (?, ?, ?, ?, ?)", _rows(
        dump["blocks"], ("block_id", "status", "n_files", "first_seen", "sealed_at")))
    conn.executemany(
        "INSERT INTO stages (block_id, stage, status, queue_seq, attempts, token, worker, "
        "expires_at, result, error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(s["block_id"], s["stage"], s["status"], seq, s["attempts"], s["token"],
          s["worker"], s["expires_at"], json.dumps(s["result"]) if s["result"] else None,
          json.dumps(s["error"]) if s["error"] else None, s["updated_at"])
         for seq, s in stage_rows(dump)])
    conn.execute("UPDATE counters SET value = ? WHERE name = 'queue'", (len(dump["stages"]),))
    conn.execute("UPDATE counters SET value = max(value, ?) WHERE name = 'fence'",
                 (dump["fence"],))
    conn.executemany(
        "INSERT INTO products (block_id, stage, kind, path, checksum, provenance, token, "
        "recorded_at, collection) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(p["block_id"], p["stage"], p["kind"], p["path"], p["checksum"],
          json.dumps(p["provenance"]), p["token"], p["recorded_at"], p.get("collection"))
         for p in dump["products"]])
    conn.executemany("INSERT INTO configurations VALUES (?, ?, ?)", [
        (h, json.dumps(c), dump["exported_at"])
        for h, c in dump.get("configurations", {}).items()])
    conn.executemany("INSERT INTO solutions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _rows(
        dump["solutions"], ("solutions_id", "path", "strip_dec_deg", "valid_from",
                            "valid_until", "calibrator", "block_id", "status",
                            "registered_at")))
    conn.executemany("INSERT INTO solutions_use VALUES (?, ?, ?)", _rows(
        dump["solutions_uses"], ("block_id", "solutions_id", "used_at")))
    conn.executemany(
        "INSERT INTO failures (block_id, stage, worker, error, message, transient, input, "
        "traceback_digest, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _rows(
            dump["failures"], ("block_id", "stage", "worker", "error", "message", "transient",
                               "input", "traceback_digest", "at")))
    conn.executemany("INSERT INTO events (kind, data, at) VALUES (?, ?, ?)",
                     [(e["kind"], json.dumps(e["data"]), e["at"]) for e in dump["events"]])
    metrics = dump["metrics"]
    conn.executemany("INSERT INTO metric_raw VALUES (?, ?, ?, ?)", _rows(
        metrics["raw"], ("name", "at", "value", "block_id")))
    conn.executemany("INSERT INTO metric_minute VALUES (?, ?, ?, ?, ?, ?)", _rows(
        metrics["minute"], ("name", "minute", "sum", "count", "min", "max")))
    conn.executemany("INSERT INTO metric_block VALUES (?, ?, ?, ?, ?, ?, ?)", _rows(
        metrics["block"], ("name", "block_id", "sum", "count", "min", "max", "last_at")))
