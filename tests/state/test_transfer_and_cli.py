"""``contimg state``: status, failures, events --follow, migrate, and export/import moving
the whole history from SQLite to Redis and back."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contimg_dask.cli.main import main
from contimg_dask.errors import CasaError, InputError
from contimg_dask.state import MetricSample, Solutions, StateStore, open_state_store
from contimg_dask.state.sqlite_schema import LATEST_SCHEMA, migrate
from tests.helpers import make_config
from tests.state.redis_process import RedisProcess
from tests.state.test_contract import BLOCK, BLOCK2, result_for

REPO = Path(__file__).resolve().parents[2]


def populate(store: StateStore) -> None:
    """A little of everything: sealed blocks, stages in every status, products (one of a
    collection), a configuration, calibration, failures, events and metrics."""
    for sb in range(16):
        store.register_file(BLOCK, f"/in/a{sb:02d}.hdf5", sb)
    store.register_file(BLOCK2, "/in/b00.hdf5", 0)
    store.seal_block(BLOCK, 16, 600)
    for block in (BLOCK, BLOCK2):
        for stage in ("ingest", "flag", "image"):
            store.enqueue(block, stage)
    done = store.claim("w1", 600)
    store.complete(done, result_for(done, collection="mosaic-h",
                                    config={"imaging": {"niter": 5}}))
    failed = store.claim("w1", 600)
    store.fail(failed, InputError("truncated", file="/in/a03.hdf5"))
    retry = store.claim("w2", 600)
    store.fail(retry, CasaError("tclean timed out"))
    store.claim("w3", 600)  # left running
    store.register_solutions(Solutions("s1", "/cal/s1.zarr", 71.6, 1.77e9, 1.7701e9,
                                       "3C286", BLOCK, "valid", 1.77e9))
    store.record_solutions_use(BLOCK, "s1")
    store.emit("alert", {"level": "warning", "text": "flag fraction 0.4"})
    store.record_metrics([MetricSample("noise", 1.0 + i, 1.77e9 + 7 * i,
                                       BLOCK if i < 10 else None) for i in range(20)])


def comparable(dump: dict) -> dict:
    """A dump without what legitimately differs between stores."""
    out = {k: v for k, v in dump.items() if k not in ("exported_at", "source")}
    out["events"] = [{k: v for k, v in e.items() if k != "id"} for e in dump["events"]]
    for rate in ("minute", "block"):
        out["metrics"][rate] = sorted(dump["metrics"][rate],
                                      key=lambda m: json.dumps(m, sort_keys=True))
    for key in ("stages", "products", "failures", "files"):
        out[key] = sorted(dump[key], key=lambda m: json.dumps(m, sort_keys=True))
    return out


def cli(root: Path, *args: str, redis_url: str | None = None,
        instance: str = "moved") -> list[str]:
    sets = [f"paths.root={root}"]
    if redis_url:
        sets += ["state.backend=redis", f"state.url={redis_url}", f"state.instance={instance}"]
    return ["--env", "testing", *[x for s in sets for x in ("--set", s)], *args]


def test_export_to_redis_and_back_keeps_the_history(tmp_path: Path,
                                                   redis_server: RedisProcess,
                                                   capsys: pytest.CaptureFixture) -> None:
    source = open_state_store(make_config(tmp_path / "one"))
    populate(source)
    fence = source.fence()
    original = source.export()
    assert original["configurations"] == {"c0ffee": {"imaging": {"niter": 5}}}
    assert {p["collection"] for p in original["products"]} == {None, "mosaic-h"}
    source.close()
    dump = tmp_path / "state.json"
    assert main(cli(tmp_path / "one", "state", "export", str(dump))) == 0
    assert main(cli(tmp_path, "state", "import", str(dump), redis_url=redis_server.url)) == 0
    moved = open_state_store(make_config(tmp_path, **{
        "state.backend": "redis", "state.url": redis_server.url, "state.instance": "moved"}))
    in_redis = moved.export()
    running = [s for s in original["stages"] if s["status"] == "running"]
    assert len(running) == 1
    expected = comparable(original)
    for stage in expected["stages"]:
        if stage["status"] == "running":  # leases do not move
            stage.update(status="pending", worker=None, expires_at=None)
    expected["stages"] = sorted(expected["stages"], key=lambda m: json.dumps(m, sort_keys=True))
    assert comparable(in_redis) == expected
    # The queue and the fencing tokens carry on where they were.
    lease = moved.claim("cluster-node", 600)
    assert lease.token > fence
    assert (lease.block_id, lease.stage) in {(s["block_id"], s["stage"]) for s in
                                              original["stages"] if s["status"] != "done"
                                              and s["status"] != "failed"}
    moved.close()
    # And back into a fresh SQLite store: the same again.
    assert main(cli(tmp_path, "state", "export", str(tmp_path / "back.json"),
                    redis_url=redis_server.url)) == 0
    assert main(cli(tmp_path / "two", "state", "import", str(tmp_path / "back.json"))) == 0
    back = open_state_store(make_config(tmp_path / "two"))
    assert comparable(back.export())["metrics"] == comparable(in_redis)["metrics"]
    assert len(back.events()) == len(in_redis["events"])
    # A store that has state refuses an import.
    assert main(cli(tmp_path / "two", "state", "import", str(tmp_path / "back.json"))) == 2
    assert "import needs an empty state store" in capsys.readouterr().err
    back.close()


def test_status_and_failures_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = open_state_store(make_config(tmp_path))
    populate(store)
    store.close()
    capsys.readouterr()
    assert main(cli(tmp_path, "state", "status", "--json")) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["blocks"] == {"complete": 1, "open": 1}
    # Claimed oldest block first, in queue order within it: ingest, flag, image of BLOCK;
    # the image's transient failure requeues it in its block's place, so w3 claims it again.
    assert status["stages"] == {"flag": {"failed": 1, "pending": 1},
                                "image": {"pending": 1, "running": 1},
                                "ingest": {"done": 1, "pending": 1}}
    assert status["backlog"] == 3
    assert [(x["block_id"], x["worker"]) for x in status["leases"]] == [(BLOCK, "w3")]
    assert main(cli(tmp_path, "state", "failures", "--json")) == 0
    failures = json.loads(capsys.readouterr().out)
    assert [(f["error"], f["transient"]) for f in failures] == [
        ("InputError", False), ("CasaError", True)]
    assert main(cli(tmp_path, "state", "failures")) == 0
    text = capsys.readouterr().out
    assert "InputError (permanent)  truncated  [/in/a03.hdf5]" in text
    # The 20 samples (1.77e9 s, 133 s long: 3 minutes) are older than the raw (7 days) and
    # minute (90 days) retention; per-block averages are kept forever, the events are new.
    assert main(cli(tmp_path, "state", "prune")) == 0
    assert "removed 20 raw, 3 minute, 0 block, 0 events" in capsys.readouterr().out


@pytest.mark.parametrize("old_schema", [1, 2])
def test_migrate_command(tmp_path: Path, capsys: pytest.CaptureFixture,
                         old_schema: int) -> None:
    """An old database is refused until migrated; its products survive the migration (schema
    3 adds their collection, empty for products recorded before, and the configurations)."""
    path = tmp_path / "state" / "state.sqlite"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, 0, "contimg", target=old_schema)
    conn.execute("INSERT INTO products (block_id, stage, kind, path, checksum, provenance, "
                 "token, recorded_at) VALUES ('b', 'export', 'ms', '/p/b.ms', NULL, "
                 "'{\"config_hash\": \"h\"}', 7, 1.77e9)")
    conn.close()
    assert main(cli(tmp_path, "state", "status")) == 2
    assert "contimg state migrate" in capsys.readouterr().err
    assert main(cli(tmp_path, "state", "migrate")) == 0
    assert f"schema {LATEST_SCHEMA}" in capsys.readouterr().out
    assert main(cli(tmp_path, "state", "status")) == 0
    store = open_state_store(make_config(tmp_path))
    (record,) = store.products()
    assert (record.path, record.token, record.collection) == ("/p/b.ms", 7, None)
    assert store.configuration("h") is None
    store.close()


@pytest.mark.slow
def test_events_follow_prints_new_events(tmp_path: Path) -> None:
    store = open_state_store(make_config(tmp_path))
    store.emit("first", {"n": 1})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    follower = subprocess.Popen(
        [sys.executable, "-m", "contimg_dask.cli.main",
         *cli(tmp_path, "state", "events", "--follow", "--json", "--interval", "0.1")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert json.loads(follower.stdout.readline())["kind"] == "first"
        time.sleep(0.3)
        store.emit("second", {"n": 2})
        store.emit("third", {"n": 3})
        lines = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [(e["kind"], e["data"]) for e in lines] == [("second", {"n": 2}),
                                                            ("third", {"n": 3})]
    finally:
        follower.kill()
        follower.wait()
        store.close()
