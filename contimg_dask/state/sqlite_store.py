"""The embedded state store: one SQLite file under ``paths.state``.

WAL mode (readers never block the writer), ``busy_timeout`` for writers waiting on each
other, and every write in ``BEGIN IMMEDIATE`` (the write lock is taken before anything is
read, so two processes can never both read a pending stage and both claim it). A writer
still refused after ``busy_timeout`` gets StateUnavailableError (transient), never a bare
``database is locked``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from contimg_dask.config.schema import StateConfig
from contimg_dask.errors import (
    LeaseLostError,
    StateAccessError,
    StateError,
    StateUnavailableError,
)
from contimg_dask.stages.contract import StageResult, product_provenance
from contimg_dask.state import sqlite_schema as schema
from contimg_dask.state.records import (
    COMPLETE,
    DONE,
    FAILED,
    OPEN,
    PARTIAL,
    PENDING,
    RUNNING,
    BlockRecord,
    Event,
    FailureRecord,
    FileRecord,
    Lease,
    ProductRecord,
    Solutions,
    StageStatus,
)
from contimg_dask.state.sqlite_metrics import SqliteMetrics
from contimg_dask.state.summary import lease_rejected_failure, status_summary

T = TypeVar("T")
_STAGE_COLUMNS = ("block_id, stage, status, attempts, token, worker, expires_at, result, "
                  "error, updated_at")


def _stage(row: tuple) -> StageStatus:
    values = list(row)
    values[7] = json.loads(values[7]) if values[7] else None
    values[8] = json.loads(values[8]) if values[8] else None
    return StageStatus(*values)


def _where(**equal: str | None) -> tuple[str, list[str]]:
    """A WHERE clause requiring each given (not None) column to equal its value."""
    given = {column: value for column, value in equal.items() if value is not None}
    clause = " AND ".join(f"{column} = ?" for column in given)
    return (f"WHERE {clause}" if given else ""), list(given.values())


class SqliteStateStore(SqliteMetrics):
    """The SQLite implementation of :class:`~contimg_dask.state.protocol.StateStore`.

    One instance per process (open it after forking); it may be shared by the threads of
    that process.
    """

    backend = "sqlite"

    def __init__(self, path: Path, settings: StateConfig, *, migrate: bool = False) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.settings = settings
        self._busy_s = settings.sqlite.busy_timeout_ms / 1000.0
        self._lock = threading.RLock()
        schema.check_location(self.path, settings.sqlite.allow_network_filesystem)
        schema.check_header(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=self._busy_s,
                                         isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.OperationalError) as exc:
            raise StateAccessError(f"cannot open the state database: {exc}",
                                   file=self.path) from exc
        try:
            self._configure()
            version = schema.schema_of(self._conn, self.path)
            schema.check_version(version, self.path, migrate)
            self._version = self._retry(
                lambda: schema.migrate(self._conn, version, settings.instance))
        except BaseException:
            self._conn.close()
            raise

    def _configure(self) -> None:
        sqlite = self.settings.sqlite

        def configure() -> str:
            self._conn.execute(f"PRAGMA busy_timeout = {sqlite.busy_timeout_ms}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._conn.execute(f"PRAGMA synchronous = {sqlite.synchronous}")
            return mode

        mode = self._retry(configure)
        if mode != "wal":
            raise StateAccessError(f"cannot put the state database in WAL mode (got {mode})",
                                   file=self.path)

    # -- plumbing ---------------------------------------------------------------------------

    def _retry(self, action: Callable[[], T]) -> T:
        """Run ``action``, retrying SQLITE_BUSY (which SQLite returns without waiting in a
        few cases, e.g. during WAL recovery) until ``busy_timeout`` has passed; other
        SQLite errors become classified StateErrors naming the file."""
        deadline = time.monotonic() + self._busy_s
        delay = 0.001
        while True:
            try:
                return action()
            except sqlite3.DatabaseError as exc:
                text = str(exc)
                if "locked" not in text and "busy" not in text:
                    raise schema.classify_error(exc, self.path) from exc
                if time.monotonic() > deadline:
                    raise StateUnavailableError(
                        f"the state database stayed locked for {self._busy_s:.0f} s "
                        "(state.sqlite.busy_timeout_ms)", file=self.path) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            try:
                yield self._conn
            except sqlite3.DatabaseError as exc:
                self._conn.execute("ROLLBACK")
                raise schema.classify_error(exc, self.path) from exc
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._retry(lambda: self._conn.execute("COMMIT"))

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._retry(lambda: self._conn.execute(sql, tuple(params)).fetchall())

    def close(self) -> None:
        self._conn.close()

    def schema_version(self) -> int:
        return self._version

    @staticmethod
    def _next(conn: sqlite3.Connection, counter: str) -> int:
        return conn.execute("UPDATE counters SET value = value + 1 WHERE name = ? "
                            "RETURNING value", (counter,)).fetchone()[0]

    @staticmethod
    def _emit(conn: sqlite3.Connection, kind: str, data: dict[str, Any], at: float) -> str:
        cursor = conn.execute("INSERT INTO events (kind, data, at) VALUES (?, ?, ?)",
                              (kind, json.dumps(data), at))
        return str(cursor.lastrowid)

    # -- files and blocks -------------------------------------------------------------------

    def register_file(self, block_id: str, path: str, subband: int | None) -> bool:
        now = time.time()
        with self._write() as conn:
            new = conn.execute("INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?)",
                               (path, block_id, subband, now)).rowcount == 1
            if new:
                conn.execute("INSERT INTO blocks VALUES (?, ?, 1, ?, NULL) ON CONFLICT "
                             "(block_id) DO UPDATE SET n_files = n_files + 1",
                             (block_id, OPEN, now))
        return new

    def register_file_near(self, block_ids: Sequence[str], path: str, subband: int | None
                           ) -> tuple[str, bool]:
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT block_id FROM files WHERE path = ?", (path,)).fetchone()
            if row is not None:
                return row[0], False
            marks = ", ".join("?" * len(block_ids))
            known = {r[0] for r in conn.execute(
                f"SELECT block_id FROM blocks WHERE block_id IN ({marks})", list(block_ids))}
            block_id = next((b for b in block_ids if b in known), block_ids[0])
            conn.execute("INSERT INTO files VALUES (?, ?, ?, ?)", (path, block_id, subband, now))
            conn.execute("INSERT INTO blocks VALUES (?, ?, 1, ?, NULL) ON CONFLICT "
                         "(block_id) DO UPDATE SET n_files = n_files + 1",
                         (block_id, OPEN, now))
        return block_id, True

    def rename_block(self, block_id: str, new_id: str) -> bool:
        with self._write() as conn:
            row = conn.execute("SELECT status, (SELECT COUNT(*) FROM stages WHERE block_id = "
                               "?), (SELECT COUNT(*) FROM blocks WHERE block_id = ?) FROM "
                               "blocks WHERE block_id = ?", (block_id, new_id, block_id)
                               ).fetchone()
            if row is None:
                raise StateError(f"no block {block_id} in the state store", block=block_id,
                                 file=self.path)
            if row != (OPEN, 0, 0):
                return False
            conn.execute("UPDATE blocks SET block_id = ? WHERE block_id = ?", (new_id, block_id))
            conn.execute("UPDATE files SET block_id = ? WHERE block_id = ?", (new_id, block_id))
        return True

    def seal_block(self, block_id: str, expected_files: int, deadline_s: float,
                   now: float | None = None) -> str:
        now = time.time() if now is None else now
        with self._write() as conn:
            row = conn.execute("SELECT status, n_files, first_seen FROM blocks "
                               "WHERE block_id = ?", (block_id,)).fetchone()
            if row is None:
                raise StateError(f"no block {block_id} in the state store", block=block_id,
                                 file=self.path)
            status, n_files, first_seen = row
            if status != OPEN:
                return status
            if n_files >= expected_files:
                status = COMPLETE
            elif now - first_seen >= deadline_s:
                status = PARTIAL
            else:
                return OPEN
            conn.execute("UPDATE blocks SET status = ?, sealed_at = ? WHERE block_id = ?",
                         (status, now, block_id))
            self._emit(conn, "block_sealed", {"block_id": block_id, "status": status,
                                              "n_files": n_files}, now)
        return status

    def block(self, block_id: str) -> BlockRecord | None:
        rows = self._read("SELECT * FROM blocks WHERE block_id = ?", (block_id,))
        return BlockRecord(*rows[0]) if rows else None

    def blocks(self, status: str | None = None) -> list[BlockRecord]:
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        return [BlockRecord(*r) for r in self._read(
            f"SELECT * FROM blocks {where} ORDER BY block_id", params)]

    def files(self, block_id: str) -> list[FileRecord]:
        return [FileRecord(*r) for r in self._read(
            "SELECT * FROM files WHERE block_id = ? ORDER BY subband IS NULL, subband, path",
            (block_id,))]

    # -- stages and leases ------------------------------------------------------------------

    def enqueue(self, block_id: str, stage: str, *, retry_failed: bool = False,
                redo: bool = False) -> bool:
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT status FROM stages WHERE block_id = ? AND stage = ?",
                               (block_id, stage)).fetchone()
            if row is not None and not ((retry_failed and row[0] == FAILED)
                                        or (redo and row[0] in (DONE, FAILED))):
                return False
            seq = self._next(conn, "queue")
            if row is None:
                conn.execute("INSERT INTO stages (block_id, stage, status, queue_seq, "
                             "attempts, updated_at) VALUES (?, ?, ?, ?, 0, ?)",
                             (block_id, stage, PENDING, seq, now))
            else:
                conn.execute("UPDATE stages SET status = ?, queue_seq = ?, attempts = 0, "
                             "updated_at = ? WHERE block_id = ? AND stage = ?",
                             (PENDING, seq, now, block_id, stage))
        return True

    def claim(self, worker: str, lease_s: float,
              stages: Iterable[str] | None = None) -> Lease | None:
        wanted = list(stages) if stages is not None else None
        where = "status = ?"
        params: list[Any] = [PENDING]
        if wanted is not None:
            if not wanted:
                return None
            where += f" AND stage IN ({', '.join('?' * len(wanted))})"
            params += wanted
        with self._write() as conn:
            now = time.time()
            row = conn.execute(f"SELECT id, block_id, stage, attempts FROM stages WHERE "
                               f"{where} ORDER BY block_id, queue_seq LIMIT 1",
                               params).fetchone()
            if row is None:
                return None
            token = self._next(conn, "fence")
            expires = now + lease_s
            conn.execute("UPDATE stages SET status = ?, attempts = attempts + 1, token = ?, "
                         "worker = ?, expires_at = ?, updated_at = ? WHERE id = ?",
                         (RUNNING, token, worker, expires, now, row[0]))
        return Lease(row[1], row[2], worker, token, expires, row[3] + 1)

    def _check_token(self, conn: sqlite3.Connection, lease: Lease, action: str,
                     now: float) -> None:
        row = conn.execute("SELECT status, token FROM stages WHERE block_id = ? AND "
                           "stage = ?", (lease.block_id, lease.stage)).fetchone()
        if row is not None and row[0] == RUNNING and row[1] == lease.token:
            return
        raise LeaseLostError(
            f"{action} with fencing token {lease.token} refused: the stage is "
            f"{row[0] if row else 'unknown'} with token {row[1] if row else None}",
            block=lease.block_id, stage=lease.stage, file=self.path)

    def _reject(self, lease: Lease, exc: LeaseLostError) -> None:
        """Record a refused call from a stale holder (its own transaction: the refusal
        itself rolled back)."""
        failure = lease_rejected_failure(lease, exc, time.time())
        with self._write() as conn:
            self._insert_failure(conn, failure)
            self._emit(conn, "lease_rejected", {**lease.to_dict(), "message": exc.message},
                       failure.at)

    @contextmanager
    def _holding(self, lease: Lease, action: str) -> Iterator[tuple[sqlite3.Connection, float]]:
        try:
            with self._write() as conn:
                now = time.time()
                self._check_token(conn, lease, action, now)
                yield conn, now
        except LeaseLostError as exc:
            self._reject(lease, exc)
            raise

    def heartbeat(self, lease: Lease, lease_s: float) -> Lease:
        with self._holding(lease, "heartbeat") as (conn, now):
            conn.execute("UPDATE stages SET expires_at = ?, updated_at = ? WHERE "
                         "block_id = ? AND stage = ?",
                         (now + lease_s, now, lease.block_id, lease.stage))
        return Lease(lease.block_id, lease.stage, lease.worker, lease.token, now + lease_s,
                     lease.attempt)

    def complete(self, lease: Lease, result: StageResult) -> None:
        record = result.to_dict()
        config = result.provenance.config
        with self._holding(lease, "complete") as (conn, now):
            conn.execute("UPDATE stages SET status = ?, result = ?, expires_at = NULL, "
                         "updated_at = ? WHERE block_id = ? AND stage = ?",
                         (DONE, json.dumps(record), now, lease.block_id, lease.stage))
            if config is not None:
                conn.execute("INSERT OR IGNORE INTO configurations VALUES (?, ?, ?)",
                             (result.provenance.config_hash, json.dumps(config), now))
            conn.executemany(
                "INSERT INTO products (block_id, stage, kind, path, checksum, provenance, "
                "token, recorded_at, collection) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(lease.block_id, lease.stage, p["kind"], p["path"], p["checksum"],
                  json.dumps(product_provenance(record["provenance"], p)), lease.token, now,
                  p["collection"]) for p in record["products"]])
            self._emit(conn, "stage_done", {"block_id": lease.block_id, "stage": lease.stage,
                                            "token": lease.token,
                                            "seconds": record["seconds"]}, now)

    def _requeue_or_fail(self, conn: sqlite3.Connection, block_id: str, stage: str,
                         failure: FailureRecord, now: float) -> str:
        attempts = conn.execute("SELECT attempts FROM stages WHERE block_id = ? AND "
                                "stage = ?", (block_id, stage)).fetchone()[0]
        retry = failure.transient and attempts < self.settings.max_attempts
        status = PENDING if retry else FAILED
        conn.execute("UPDATE stages SET status = ?, queue_seq = ?, expires_at = NULL, "
                     "error = ?, updated_at = ? WHERE block_id = ? AND stage = ?",
                     (status, self._next(conn, "queue"), json.dumps(failure.to_dict()), now,
                      block_id, stage))
        self._insert_failure(conn, failure)
        self._emit(conn, "stage_failed" if status == FAILED else "stage_retry",
                   {"block_id": block_id, "stage": stage, "error": failure.error,
                    "attempts": attempts}, now)
        return status

    def fail(self, lease: Lease, exc: BaseException, input: str | None = None) -> str:
        with self._holding(lease, "fail") as (conn, now):
            failure = FailureRecord.from_exception(exc, block_id=lease.block_id,
                                                   stage=lease.stage, worker=lease.worker,
                                                   at=now, input=input)
            return self._requeue_or_fail(conn, lease.block_id, lease.stage, failure, now)

    def reap(self, now: float | None = None) -> list[Lease]:
        reaped = []
        with self._write() as conn:
            now = time.time() if now is None else now
            rows = conn.execute("SELECT block_id, stage, worker, token, expires_at, attempts "
                                "FROM stages WHERE status = ? AND expires_at < ?",
                                (RUNNING, now)).fetchall()
            for row in rows:
                lease = Lease(*row)
                failure = FailureRecord(
                    block_id=lease.block_id, stage=lease.stage, worker=lease.worker,
                    error="LeaseExpired", message=f"lease of {lease.worker} (token "
                    f"{lease.token}) expired without a heartbeat", transient=True, input=None,
                    traceback_digest=None, at=now)
                self._requeue_or_fail(conn, lease.block_id, lease.stage, failure, now)
                reaped.append(lease)
        return reaped

    def stage_status(self, block_id: str, stage: str) -> StageStatus | None:
        rows = self._read(f"SELECT {_STAGE_COLUMNS} FROM stages WHERE block_id = ? AND "
                          "stage = ?", (block_id, stage))
        return _stage(rows[0]) if rows else None

    def stages(self, block_id: str | None = None,
               status: str | None = None) -> list[StageStatus]:
        where, params = _where(block_id=block_id, status=status)
        return [_stage(r) for r in self._read(
            f"SELECT {_STAGE_COLUMNS} FROM stages {where} ORDER BY id", params)]

    def products(self, block_id: str | None = None,
                 kind: str | None = None) -> list[ProductRecord]:
        where, params = _where(block_id=block_id, kind=kind)
        rows = self._read("SELECT block_id, stage, kind, path, checksum, provenance, token, "
                          f"recorded_at, collection FROM products {where} ORDER BY id", params)
        return [ProductRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8])
                for r in rows]

    def configuration(self, config_hash: str) -> dict[str, Any] | None:
        rows = self._read("SELECT config FROM configurations WHERE config_hash = ?",
                          (config_hash,))
        return json.loads(rows[0][0]) if rows else None

    def configurations(self) -> dict[str, dict[str, Any]]:
        return {h: json.loads(c) for h, c in self._read(
            "SELECT config_hash, config FROM configurations ORDER BY recorded_at")}

    # -- calibration registry ---------------------------------------------------------------

    def register_solutions(self, solutions: Solutions) -> bool:
        with self._write() as conn:
            return conn.execute("INSERT OR IGNORE INTO solutions VALUES "
                                "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                tuple(solutions.to_dict().values())).rowcount == 1

    def set_solutions_status(self, solutions_id: str, status: str) -> None:
        with self._write() as conn:
            if conn.execute("UPDATE solutions SET status = ? WHERE solutions_id = ?",
                            (status, solutions_id)).rowcount != 1:
                raise StateError(f"no solutions {solutions_id} in the registry",
                                 file=self.path)

    def all_solutions(self) -> list[Solutions]:
        return [Solutions(*r) for r in self._read(
            "SELECT * FROM solutions ORDER BY registered_at, solutions_id")]

    def solutions_for(self, dec_deg: float, at: float,
                      dec_tolerance_deg: float) -> Solutions | None:
        rows = self._read("SELECT * FROM solutions WHERE status = 'valid' AND "
                          "abs(strip_dec_deg - ?) <= ? AND valid_from <= ? AND "
                          "valid_until >= ? ORDER BY valid_from DESC, registered_at DESC "
                          "LIMIT 1", (dec_deg, dec_tolerance_deg, at, at))
        return Solutions(*rows[0]) if rows else None

    def record_solutions_use(self, block_id: str, solutions_id: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO solutions_use VALUES (?, ?, ?)",
                         (block_id, solutions_id, time.time()))

    def solutions_users(self, solutions_id: str) -> list[str]:
        return [r[0] for r in self._read("SELECT block_id FROM solutions_use WHERE "
                                         "solutions_id = ? ORDER BY block_id",
                                         (solutions_id,))]

    def all_solutions_uses(self) -> list[dict[str, Any]]:
        return [{"block_id": r[0], "solutions_id": r[1], "used_at": r[2]}
                for r in self._read("SELECT * FROM solutions_use ORDER BY used_at")]

    # -- failures ---------------------------------------------------------------------------

    @staticmethod
    def _insert_failure(conn: sqlite3.Connection, failure: FailureRecord) -> None:
        conn.execute("INSERT INTO failures (block_id, stage, worker, error, message, "
                     "transient, input, traceback_digest, at) VALUES "
                     "(?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(failure.to_dict().values()))

    def record_failure(self, failure: FailureRecord) -> None:
        with self._write() as conn:
            self._insert_failure(conn, failure)

    def failures(self, limit: int = 100, block_id: str | None = None
                 ) -> list[FailureRecord]:
        where, params = ("WHERE block_id = ?", [block_id]) if block_id else ("", [])
        rows = self._read("SELECT block_id, stage, worker, error, message, transient, input, "
                          f"traceback_digest, at FROM failures {where} ORDER BY id DESC "
                          "LIMIT ?", [*params, limit])
        return [FailureRecord(*r[:5], bool(r[5]), *r[6:]) for r in reversed(rows)]

    # -- events -----------------------------------------------------------------------------

    def emit(self, kind: str, data: dict[str, Any]) -> str:
        with self._write() as conn:
            return self._emit(conn, kind, data, time.time())

    @staticmethod
    def _event(row: tuple) -> Event:
        return Event(str(row[0]), row[1], json.loads(row[2]), row[3])

    def events(self, after: str | None = None, count: int = 100) -> list[Event]:
        rows = self._read("SELECT id, kind, data, at FROM events WHERE id > ? ORDER BY id "
                          "LIMIT ?", (int(after) if after else 0, count))
        return [self._event(r) for r in rows]

    def read_group(self, group: str, consumer: str, count: int = 100) -> list[Event]:
        with self._write() as conn:
            now = time.time()
            conn.execute("INSERT OR IGNORE INTO event_groups VALUES (?, 0)", (group,))
            mine = [r[0] for r in conn.execute(
                "SELECT event_id FROM event_pending WHERE grp = ? AND consumer = ? "
                "ORDER BY event_id LIMIT ?", (group, consumer, count))]
            idle = [r[0] for r in conn.execute(
                "SELECT event_id FROM event_pending WHERE grp = ? AND consumer != ? AND "
                "delivered_at < ? ORDER BY event_id LIMIT ?",
                (group, consumer, now - self.settings.event_redelivery_s,
                 count - len(mine)))]
            again = mine + idle
            conn.executemany("UPDATE event_pending SET consumer = ?, delivered_at = ?, "
                             "deliveries = deliveries + 1 WHERE grp = ? AND event_id = ?",
                             [(consumer, now, group, i) for i in again])
            last = conn.execute("SELECT last_id FROM event_groups WHERE grp = ?",
                                (group,)).fetchone()[0]
            new = [r[0] for r in conn.execute(
                "SELECT id FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (last, count - len(again)))]
            if new:
                conn.executemany("INSERT INTO event_pending VALUES (?, ?, ?, ?, 1)",
                                 [(group, i, consumer, now) for i in new])
                conn.execute("UPDATE event_groups SET last_id = ? WHERE grp = ?",
                             (new[-1], group))
            ids = sorted(again + new)
            if not ids:
                return []
            rows = conn.execute(f"SELECT id, kind, data, at FROM events WHERE id IN "
                                f"({', '.join('?' * len(ids))}) ORDER BY id", ids).fetchall()
            gone = set(ids) - {r[0] for r in rows}  # pruned before delivery
            conn.executemany("DELETE FROM event_pending WHERE grp = ? AND event_id = ?",
                             [(group, i) for i in gone])
        return [self._event(r) for r in rows]

    def ack(self, group: str, ids: Iterable[str]) -> int:
        with self._write() as conn:
            return conn.executemany("DELETE FROM event_pending WHERE grp = ? AND "
                                    "event_id = ?", [(group, int(i)) for i in ids]).rowcount

    # -- whole store ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        # the stages without their results and errors: no JSON decoded to count them (the
        # dashboard asks every second; decoding was 3/4 of its snapshot's CPU time)
        counted = [_stage(r) for r in self._read(
            "SELECT block_id, stage, status, attempts, token, worker, expires_at, NULL, NULL, "
            "updated_at FROM stages ORDER BY id")]
        return status_summary(self, now=time.time(), stages=counted)

    def export(self) -> dict[str, Any]:
        from contimg_dask.state.transfer import dump_store

        return dump_store(self)

    def fence(self) -> int:
        return self._read("SELECT value FROM counters WHERE name = 'fence'")[0][0]

    def import_dump(self, dump: dict[str, Any]) -> None:
        from contimg_dask.state.sqlite_transfer import load_dump

        with self._write() as conn:
            load_dump(conn, dump, self.path)
