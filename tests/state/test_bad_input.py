"""Bad databases and bad servers: each a clear error naming the file or URL, classified
transient or permanent, and nothing damaged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import redis

from contimg_dask.errors import (
    InputError,
    StateAccessError,
    StateCorruptError,
    StateLocationError,
    StateSchemaError,
    StateUnavailableError,
)
from contimg_dask.state import open_state_store
from contimg_dask.state.filesystems import filesystem_type
from contimg_dask.state.sqlite_schema import LATEST_SCHEMA, check_location, migrate
from tests.helpers import make_config
from tests.state.redis_process import RedisProcess, free_port


def state_file(root: Path) -> Path:
    return root / "state" / "state.sqlite"


def test_random_bytes_are_not_a_database(tmp_path: Path) -> None:
    path = state_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 16)
    before = path.read_bytes()
    with pytest.raises(StateCorruptError, match="not an SQLite database") as info:
        open_state_store(make_config(tmp_path))
    assert info.value.file == str(path) and str(path) in str(info.value)
    assert not info.value.transient
    assert path.read_bytes() == before  # left as it was


def test_damaged_sqlite_file(tmp_path: Path) -> None:
    store = open_state_store(make_config(tmp_path))
    store.register_file("b", "/f", 0)
    store.close()
    path = state_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # page 1 (the schema) overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(StateCorruptError, match="state database is damaged") as info:
        open_state_store(make_config(tmp_path))
    assert info.value.file == str(path) and not info.value.transient


def test_another_applications_sqlite_database(tmp_path: Path) -> None:
    path = state_file(tmp_path)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE queue (id INTEGER, status TEXT)")
        conn.execute("INSERT INTO queue VALUES (1, 'converted')")
    with pytest.raises(StateCorruptError, match=r"another application \(tables: queue\)") as info:
        open_state_store(make_config(tmp_path))
    assert info.value.file == str(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM queue").fetchall() == [(1, "converted")]


def test_newer_sqlite_schema_is_refused(tmp_path: Path) -> None:
    open_state_store(make_config(tmp_path)).close()
    with sqlite3.connect(state_file(tmp_path)) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST_SCHEMA + 5}")
    with pytest.raises(StateSchemaError, match=f"schema {LATEST_SCHEMA + 5}, newer") as info:
        open_state_store(make_config(tmp_path))
    assert info.value.file == str(state_file(tmp_path)) and not info.value.transient


def test_older_sqlite_schema_migrates_forward_on_request(tmp_path: Path) -> None:
    path = state_file(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, 0, "contimg", target=1)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO failures (error, message, transient, at) VALUES "
                 "('CasaError', 'from schema 1', 1, 5.0)")
    conn.execute("COMMIT")
    conn.close()
    with pytest.raises(StateSchemaError, match=r"schema 1, older .* `contimg state migrate`"):
        open_state_store(make_config(tmp_path))
    store = open_state_store(make_config(tmp_path), migrate=True)
    assert store.schema_version() == LATEST_SCHEMA
    assert [f.message for f in store.failures()] == ["from schema 1"]
    store.close()
    with sqlite3.connect(path) as check:
        indexes = {r[0] for r in check.execute("SELECT name FROM sqlite_master WHERE "
                                               "type = 'index'")}
    assert {"failures_block", "events_age"} <= indexes


def test_network_filesystem_is_refused(tmp_path: Path) -> None:
    # The kernel's mount table is outside the system under test: a mountinfo text in which
    # tmp_path is an NFS mount stands in for one.
    mountinfo = ("22 1 0:21 / / rw - ext4 /dev/vda rw\n"
                 f"98 22 0:50 / {tmp_path} rw,relatime - nfs4 head:/data rw,vers=4.2\n")
    path = tmp_path / "state" / "state.sqlite"
    assert filesystem_type(path, mountinfo) == "nfs4"
    assert filesystem_type(Path("/usr/bin"), mountinfo) == "ext4"
    with pytest.raises(StateLocationError, match="nfs4 file system") as info:
        check_location(path, allow_network=False, mountinfo=mountinfo)
    assert info.value.file == str(path) and info.value.key == "paths.state"
    check_location(path, allow_network=True, mountinfo=mountinfo)
    check_location(path, allow_network=False)  # the real table: tmp is local here


def test_wrong_redis_password(tmp_path: Path) -> None:
    settings = make_config(tmp_path, **{"state.redis.password": "right-secret"}).state.redis
    server = RedisProcess(tmp_path / "redis", settings).start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        for password in ("wrong-secret", None):
            config = make_config(tmp_path, **{"state.backend": "redis", "state.url": url,
                                              "state.redis.password": password})
            with pytest.raises(StateAccessError, match="Redis refused us") as info:
                open_state_store(config)
            assert info.value.file == url and not info.value.transient
            assert "secret" not in str(info.value)
        good = make_config(tmp_path, **{"state.backend": "redis", "state.url": url,
                                        "state.redis.password": "right-secret"})
        store = open_state_store(good)
        assert store.enqueue("b", "s") is True
        store.close()
        with_password_in_url = make_config(tmp_path, **{
            "state.backend": "redis", "state.url": f"redis://:wrong-secret@127.0.0.1:"
            f"{server.port}/0"})
        with pytest.raises(StateAccessError) as info:
            open_state_store(with_password_in_url)
        assert info.value.file == f"redis://:***@127.0.0.1:{server.port}/0"
        assert "wrong-secret" not in str(info.value)
    finally:
        server.stop()


def test_unreachable_redis_is_transient(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    config = make_config(tmp_path, **{"state.backend": "redis", "state.url": url})
    with pytest.raises(StateUnavailableError, match="cannot reach Redis") as info:
        open_state_store(config)
    assert info.value.file == url and info.value.transient


def test_foreign_keys_and_newer_redis_schema(redis_server: RedisProcess,
                                            tmp_path: Path) -> None:
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    url = redis_server.url
    client.set("contimg:{foreign}:queue", "not ours")
    config = make_config(tmp_path, **{"state.backend": "redis", "state.url": url,
                                      "state.instance": "foreign"})
    with pytest.raises(StateCorruptError, match="not a contimg state store") as info:
        open_state_store(config)
    assert info.value.file == url
    assert client.get("contimg:{foreign}:queue") == "not ours"
    newer = make_config(tmp_path, **{"state.backend": "redis", "state.url": url,
                                     "state.instance": "newer"})
    open_state_store(newer).close()
    client.hset("contimg:{newer}:meta", "schema", 99)
    with pytest.raises(StateSchemaError, match="schema 99, newer") as info:
        open_state_store(newer)
    assert info.value.file == url and not info.value.transient
    client.close()


def test_acl_user_from_configuration(tmp_path: Path) -> None:
    """The generated redis.conf with an ACL user: the store works as that user, the default
    user is off, a wrong password is refused."""
    settings = make_config(tmp_path, **{"state.redis.username": "pipeline",
                                        "state.redis.password": "s3cret"}).state.redis
    server = RedisProcess(tmp_path / "redis", settings).start()
    try:
        base = {"state.backend": "redis", "state.url": server.url,
                "state.redis.username": "pipeline"}
        store = open_state_store(make_config(tmp_path, **base,
                                             **{"state.redis.password": "s3cret"}))
        assert store.persistence["appendonly"] == "yes"  # CONFIG GET is allowed
        store.enqueue("b", "s")
        lease = store.claim("w", 60)
        store.fail(lease, InputError("bad"))
        assert store.stage_status("b", "s").status == "failed"
        assert [e.kind for e in store.read_group("g", "c")] == ["stage_failed"]
        store.close()
        with pytest.raises(StateAccessError):
            open_state_store(make_config(tmp_path, **base, **{"state.redis.password": "no"}))
        anonymous = redis.Redis(port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
    finally:
        server.stop()
