"""Redis state schema 1 -> 2 (the pending queues' entries ordered by block, then queue
order, so a claim reads one entry per queue instead of all of them): a schema-1 keyspace is
refused without ``migrate``; migrated, its pending stages are claimed in the same order as
before, and the store goes on working. Real ``redis-server``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from contimg_dask.errors import StateSchemaError
from contimg_dask.state import open_state_store
from tests.helpers import make_config
from tests.state.redis_process import RedisProcess

BLOCKS = ("2026-03-21T08:05:09", "2026-03-21T08:00:00", "2026-03-21T08:10:18")


def _as_schema_1(client: redis.Redis, prefix: str) -> None:
    """Rewrite the pending queues as schema 1 kept them (member ``block|stage``, score
    the queue position) and mark the keyspace schema 1."""
    for key in [prefix + "pending", *client.keys(prefix + "pending:*")]:
        entries = client.zrange(key, 0, -1)
        client.delete(key)
        for entry in entries:
            block, seq, stage = entry.split(b"\0")
            client.zadd(key, {block + b"|" + stage: int(seq)})
    client.hset(prefix + "meta", "schema", 1)


def test_schema_1_is_migrated_and_claims_keep_their_order(redis_server: RedisProcess,
                                                          tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"state.backend": "redis", "state.url": redis_server.url,
                                      "state.instance": "schema1"})
    store = open_state_store(config)
    for block in BLOCKS:
        store.enqueue(block, "ingest")
    store.enqueue(BLOCKS[1], "flag")
    store.close()
    client = redis.Redis(port=redis_server.port)
    _as_schema_1(client, "contimg:{schema1}:")
    with pytest.raises(StateSchemaError, match=r"schema 1, older.*contimg state migrate"):
        open_state_store(config)
    migrated = open_state_store(config, migrate=True)
    assert migrated.schema_version() == 2
    assert client.hget("contimg:{schema1}:meta", "schema") == b"2"
    claimed = [(lease.block_id, lease.stage) for lease in iter(
        lambda: migrated.claim("w", 60.0), None)]
    # The oldest block first, in queue order within it; then the others by block id.
    assert claimed == [(BLOCKS[1], "ingest"), (BLOCKS[1], "flag"), (BLOCKS[0], "ingest"),
                       (BLOCKS[2], "ingest")]
    migrated.enqueue(BLOCKS[0], "flag")
    assert (migrated.claim("w", 60.0, ["flag"]).block_id) == BLOCKS[0]
    migrated.close()
    client.close()
