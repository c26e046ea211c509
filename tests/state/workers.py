"""Worker processes for the state store's concurrency, persistence and event tests (run as
``python -m tests.state.workers MODE ROOT OVERRIDES_JSON ...``, so a test can kill -9 them).

- ``claimer N OUT``: claim and complete up to N stages, write what it claimed to OUT (JSON);
- ``writer``: claim and complete until the queue is empty, printing ``ack BLOCK STAGE TOKEN``
  after each acknowledged completion (retrying while the store is unavailable); then, on
  SQLite, open one more transaction, print ``holding`` and wait inside it;
- ``consumer GROUP NAME``: read events in GROUP as NAME, print their ids, never acknowledge.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from contimg_dask.config import load_config
from contimg_dask.errors import StateError
from contimg_dask.stages.contract import Product, Provenance, StageResult
from contimg_dask.state import open_state_store


def stage_result(block_id: str, stage: str, token: int) -> StageResult:
    return StageResult(stage=stage, block_id=block_id,
                       products=(Product("ms", Path(f"/p/{block_id}.{stage}.{token}")),),
                       provenance=Provenance(inputs=(block_id,), config_hash="h",
                                             versions={}),
                       figures={"token": token}, seconds=0.001)


def claimer(store, n: int, out: Path) -> None:
    claims, errors = [], []
    while len(claims) < n:
        try:
            lease = store.claim("claimer", 600)
            if lease is None:
                break
            store.complete(lease, stage_result(lease.block_id, lease.stage, lease.token))
            claims.append([lease.block_id, lease.stage, lease.token])
        except Exception as exc:  # every error is counted, none is handled here
            errors.append(f"{type(exc).__name__}: {exc}")
            break
    out.write_text(json.dumps({"claims": claims, "errors": errors}))


def writer(store) -> None:
    while True:
        try:
            lease = store.claim("writer", 600)
            if lease is None:
                break
            while True:
                try:
                    store.complete(lease, stage_result(lease.block_id, lease.stage,
                                                       lease.token))
                    break
                except StateError as exc:
                    if not exc.transient:
                        raise
                    time.sleep(0.05)
        except StateError as exc:
            if not exc.transient:
                raise
            time.sleep(0.05)
            continue
        print(f"ack {lease.block_id} {lease.stage} {lease.token}", flush=True)
    if store.backend == "sqlite":
        with store._write() as conn:  # an uncommitted transaction, killed in the middle
            conn.execute("INSERT INTO files VALUES ('/uncommitted', 'x', 0, 0)")
            conn.execute("UPDATE stages SET status = 'half-written'")
            print("holding", flush=True)
            time.sleep(600)


def consumer(store, group: str, name: str) -> None:
    events = store.read_group(group, name, count=1000)
    print(json.dumps([e.id for e in events]), flush=True)
    time.sleep(600)


def main(argv: list[str]) -> None:
    mode, root, overrides = argv[0], Path(argv[1]), json.loads(argv[2])
    # load_config, not tests.helpers.make_config: that module imports pyuvdata (slow).
    store = open_state_store(load_config(environment="testing", environ={},
                                         overrides={"paths.root": str(root), **overrides}))
    if mode == "claimer":
        claimer(store, int(argv[3]), Path(argv[4]))
    elif mode == "writer":
        writer(store)
    elif mode == "consumer":
        consumer(store, argv[3], argv[4])
    store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
