"""The SQLite state store's schema: forward migrations, and the checks made when a database
is opened (what the file is, which schema it has, where it lives).

The schema version is SQLite's ``user_version``; ``meta.application`` marks the file as
ours. Migration N takes a database at version N-1 to N; all pending migrations run inside
one ``BEGIN IMMEDIATE`` transaction, so a crash leaves the old version intact.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from contimg_dask.errors import (
    StateAccessError,
    StateCorruptError,
    StateError,
    StateLocationError,
    StateSchemaError,
    StateUnavailableError,
)
from contimg_dask.state.filesystems import filesystem_type, is_network_filesystem

APPLICATION = "contimg-dask state"
SQLITE_HEADER = b"SQLite format 3\x00"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the first schema.
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO counters VALUES ('fence', 0), ('queue', 0)",
        """CREATE TABLE files (path TEXT PRIMARY KEY, block_id TEXT NOT NULL,
            subband INTEGER, registered_at REAL NOT NULL)""",
        "CREATE INDEX files_block ON files (block_id)",
        """CREATE TABLE blocks (block_id TEXT PRIMARY KEY, status TEXT NOT NULL,
            n_files INTEGER NOT NULL, first_seen REAL NOT NULL, sealed_at REAL)""",
        """CREATE TABLE stages (id INTEGER PRIMARY KEY, block_id TEXT NOT NULL,
            stage TEXT NOT NULL, status TEXT NOT NULL, queue_seq INTEGER NOT NULL,
            attempts INTEGER NOT NULL, token INTEGER, worker TEXT, expires_at REAL,
            result TEXT, error TEXT, updated_at REAL NOT NULL, UNIQUE (block_id, stage))""",
        "CREATE INDEX stages_queue ON stages (status, queue_seq)",
        "CREATE INDEX stages_expiry ON stages (status, expires_at)",
        """CREATE TABLE products (id INTEGER PRIMARY KEY, block_id TEXT NOT NULL,
            stage TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, checksum TEXT,
            provenance TEXT NOT NULL, token INTEGER NOT NULL, recorded_at REAL NOT NULL)""",
        "CREATE INDEX products_block ON products (block_id, kind)",
        """CREATE TABLE solutions (solutions_id TEXT PRIMARY KEY, path TEXT NOT NULL,
            strip_dec_deg REAL NOT NULL, valid_from REAL NOT NULL, valid_until REAL NOT NULL,
            calibrator TEXT, block_id TEXT, status TEXT NOT NULL, registered_at REAL NOT NULL)""",
        """CREATE TABLE solutions_use (block_id TEXT NOT NULL, solutions_id TEXT NOT NULL,
            used_at REAL NOT NULL, PRIMARY KEY (block_id, solutions_id))""",
        """CREATE TABLE failures (id INTEGER PRIMARY KEY, block_id TEXT, stage TEXT,
            worker TEXT, error TEXT NOT NULL, message TEXT NOT NULL, transient INTEGER NOT NULL,
            input TEXT, traceback_digest TEXT, at REAL NOT NULL)""",
        """CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
            data TEXT NOT NULL, at REAL NOT NULL)""",
        "CREATE TABLE event_groups (grp TEXT PRIMARY KEY, last_id INTEGER NOT NULL)",
        """CREATE TABLE event_pending (grp TEXT NOT NULL, event_id INTEGER NOT NULL,
            consumer TEXT NOT NULL, delivered_at REAL NOT NULL, deliveries INTEGER NOT NULL,
            PRIMARY KEY (grp, event_id))""",
        """CREATE TABLE metric_raw (name TEXT NOT NULL, at REAL NOT NULL, value REAL NOT NULL,
            block_id TEXT)""",
        "CREATE INDEX metric_raw_time ON metric_raw (name, at)",
        """CREATE TABLE metric_minute (name TEXT NOT NULL, minute INTEGER NOT NULL,
            sum REAL NOT NULL, count INTEGER NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
            PRIMARY KEY (name, minute))""",
        """CREATE TABLE metric_block (name TEXT NOT NULL, block_id TEXT NOT NULL,
            sum REAL NOT NULL, count INTEGER NOT NULL, min REAL NOT NULL, max REAL NOT NULL,
            last_at REAL NOT NULL, PRIMARY KEY (name, block_id))""",
    ),
    # 2: failures and events looked up by block and by age.
    (
        "CREATE INDEX failures_block ON failures (block_id, at)",
        "CREATE INDEX events_age ON events (at)",
    ),
    # 3: products of a collection (mosaics, light curves); configurations kept once per hash.
    (
        "ALTER TABLE products ADD COLUMN collection TEXT",
        """CREATE TABLE configurations (config_hash TEXT PRIMARY KEY, config TEXT NOT NULL,
            recorded_at REAL NOT NULL)""",
    ),
)
LATEST_SCHEMA = len(MIGRATIONS)


def classify_error(exc: sqlite3.DatabaseError, path: Path) -> StateError:
    """The StateError, naming the file, for an SQLite error that waiting cannot cure."""
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return StateCorruptError(f"the state database is damaged: {text}", file=path)
    if "readonly" in text or "unable to open" in text or "disk I/O" in text:
        return StateAccessError(f"cannot write the state database: {text}", file=path)
    if "disk is full" in text:
        return StateUnavailableError(f"no space for the state database: {text}", file=path)
    return StateError(f"state database error: {text}", file=path)


def check_location(path: Path, allow_network: bool, mountinfo: str | None = None) -> None:
    """Refuse a database on a network file system (StateLocationError naming the file)."""
    fstype = filesystem_type(path, mountinfo)
    if is_network_filesystem(fstype) and not allow_network:
        raise StateLocationError(
            f"the state database is on a {fstype} file system, where SQLite's locking is "
            "unreliable: put paths.state on a local disk or use state.backend: redis",
            file=path, key="paths.state")


def check_header(path: Path) -> None:
    """A non-empty file must start with SQLite's magic string."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except PermissionError as exc:
        raise StateAccessError(f"cannot read the state database: {exc.strerror}",
                               file=path) from exc
    if head and head != SQLITE_HEADER:
        raise StateCorruptError("not an SQLite database (corrupt or another kind of file)",
                                file=path)


def schema_of(conn: sqlite3.Connection, path: Path) -> int:
    """The database's schema version, 0 for an empty database; StateCorruptError for a
    damaged file or another application's database."""
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if not tables:
            return 0
        marker = (conn.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
                  if "meta" in tables else None)
    except sqlite3.DatabaseError as exc:
        raise StateCorruptError(f"the state database is damaged or not a database: {exc}",
                                file=path) from exc
    if marker is None or marker[0] != APPLICATION:
        raise StateCorruptError(
            "an SQLite database of another application (tables: "
            f"{', '.join(sorted(tables))}), not a contimg state store", file=path)
    return int(version)


def check_version(version: int, path: Path, migrate: bool) -> None:
    if version > LATEST_SCHEMA:
        raise StateSchemaError(
            f"the state database has schema {version}, newer than this contimg-dask knows "
            f"({LATEST_SCHEMA}): upgrade contimg-dask", file=path)
    if 0 < version < LATEST_SCHEMA and not migrate:
        raise StateSchemaError(
            f"the state database has schema {version}, older than {LATEST_SCHEMA}: run "
            "`contimg state migrate` (back the file up first)", file=path)


def migrate(conn: sqlite3.Connection, version: int, instance: str,
            target: int = LATEST_SCHEMA) -> int:
    """Apply the migrations after the database's version up to ``target`` in ONE
    transaction (a crash leaves the old version whole; processes opening a fresh database
    at the same time see it empty or complete). ``version`` is what the caller read before
    taking the write lock; the version inside the lock decides. Returns the version
    reached."""
    if version >= target:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(current + 1, target + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            if number == 1:
                conn.execute("INSERT INTO meta VALUES ('application', ?), ('instance', ?)",
                             (APPLICATION, instance))
        conn.execute(f"PRAGMA user_version = {max(current, target)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(current, target)
