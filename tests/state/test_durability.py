"""Many processes, killed processes and a restarted Redis: no double claims, no lost
completions, no lost or half-written acknowledged writes, no lost events."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contimg_dask.config import PipelineConfig
from contimg_dask.state import StateStore, open_state_store
from tests.helpers import make_config
from tests.state.conftest import backend_overrides
from tests.state.redis_process import RedisProcess

REPO = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "flag", "rephase", "calibrate", "apply", "export", "image", "pbcor",
          "photometry", "variability")


_SPAWNED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftover_workers():
    """A failing test must not leave its worker processes behind."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def spawn(mode: str, root: Path, overrides: dict, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.state.workers", mode, str(root), json.dumps(overrides),
         *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    _SPAWNED.append(proc)
    return proc


def enqueue_day(store: StateStore, n_blocks: int) -> set[tuple[str, str]]:
    tasks = set()
    for b in range(n_blocks):
        block = f"2026-03-01T{b // 60 % 24:02d}:{b % 60:02d}:{b // 1440:02d}"
        for stage in STAGES:
            store.enqueue(block, stage)
            tasks.add((block, stage))
    return tasks


def read_acks(proc: subprocess.Popen, n: int) -> list[tuple[str, str, int]]:
    acks = []
    while len(acks) < n:
        line = proc.stdout.readline()
        assert line, f"writer ended early: {proc.stderr.read()}"
        if line.startswith("ack"):
            _, block, stage, token = line.split()
            acks.append((block, stage, int(token)))
    return acks


def assert_acknowledged_and_whole(store: StateStore, acks: list[tuple[str, str, int]]) -> None:
    """Every acknowledged completion is there with its result and product; every done
    stage has exactly its product (nothing half-written)."""
    for block, stage, token in acks:
        status = store.stage_status(block, stage)
        assert (status.status, status.token) == ("done", token), (block, stage)
        assert status.result["figures"] == {"token": token}
    done = store.stages(status="done")
    products = store.products()
    assert len(products) == len(done)
    assert {(p.block_id, p.stage, p.token) for p in products} == {
        (s.block_id, s.stage, s.token) for s in done}
    assert {s.status for s in store.stages()} <= {"pending", "running", "done"}


@pytest.mark.slow
def test_eight_processes_claim_each_stage_exactly_once(backend: str, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    overrides = backend_overrides(backend, request)
    store = open_state_store(make_config(tmp_path, **overrides))
    tasks = enqueue_day(store, 800)  # 8000 stages: 8 processes x 1000 claims
    procs = [spawn("claimer", tmp_path, overrides, "1000", str(tmp_path / f"c{i}.json"))
             for i in range(8)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    reports = [json.loads((tmp_path / f"c{i}.json").read_text()) for i in range(8)]
    errors = [e for r in reports for e in r["errors"]]
    assert errors == []  # no SQLITE_BUSY / database is locked, no lost connection
    claims = [tuple(c) for r in reports for c in r["claims"]]
    assert len(claims) == 8000
    assert len({(b, s) for b, s, _ in claims}) == 8000  # 0 double claims
    assert {(b, s) for b, s, _ in claims} == tasks
    assert len({t for _, _, t in claims}) == 8000  # fencing tokens unique
    assert sum(1 for r in reports if r["claims"]) >= 2  # the processes really competed
    done = {(s.block_id, s.stage): s.token for s in store.stages(status="done")}
    assert done == {(b, s): t for b, s, t in claims}  # 0 lost completions
    assert len(store.products()) == 8000
    store.close()


@pytest.mark.slow
def test_sqlite_writer_killed_mid_transaction(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"state.sqlite.synchronous": "FULL"})
    store = open_state_store(config)
    enqueue_day(store, 30)
    store.close()
    writer = spawn("writer", tmp_path, {"state.sqlite.synchronous": "FULL"})
    acks = read_acks(writer, 300)
    while not writer.stdout.readline().startswith("holding"):
        pass
    writer.send_signal(signal.SIGKILL)  # inside an uncommitted transaction
    writer.wait()
    path = tmp_path / "state" / "state.sqlite"
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = open_state_store(config)
    assert len(acks) == 300
    assert_acknowledged_and_whole(store, acks)
    assert len(store.stages(status="done")) == 300
    assert all(f.path != "/uncommitted" for f in store.files("x"))
    store.close()


@pytest.mark.slow
def test_redis_restart_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis", make_config(tmp_path).state.redis).start()
    overrides = {"state.backend": "redis", "state.url": server.url}
    config = make_config(tmp_path, **overrides)
    try:
        store = open_state_store(config)
        assert store.persistence == {"appendonly": "yes", "appendfsync": "always"}
        enqueue_day(store, 100)
        store.close()
        writer = spawn("writer", tmp_path, overrides)
        acks = read_acks(writer, 200)
        server.stop(kill=True)  # kill -9 the server mid-run, then start it again
        time.sleep(0.5)
        server.start()
        acks += read_acks(writer, 200)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        server.stop()  # and a clean restart too
        server.start()
        store = open_state_store(config)
        assert_acknowledged_and_whole(store, acks)
        store.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_consumer_killed_before_ack_gets_the_events_again(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    overrides = {**backend_overrides(backend, request), "state.event_redelivery_s": 0.5}
    config: PipelineConfig = make_config(tmp_path, **overrides)
    store = open_state_store(config)
    emitted = [store.emit("block_sealed", {"i": i}) for i in range(20)]
    consumer = spawn("consumer", tmp_path, overrides, "imaging", "node1")
    delivered = json.loads(consumer.stdout.readline())
    assert delivered == emitted
    consumer.send_signal(signal.SIGKILL)
    consumer.wait()
    # The same consumer, restarted, gets them at once; none was lost.
    restarted = spawn("consumer", tmp_path, overrides, "imaging", "node1")
    assert json.loads(restarted.stdout.readline()) == emitted
    restarted.send_signal(signal.SIGKILL)
    restarted.wait()
    # A different consumer takes them over once they have been idle for the redelivery time.
    time.sleep(0.6)
    store.emit("block_sealed", {"i": 20})
    taken = store.read_group("imaging", "node2", count=100)
    assert [e.data["i"] for e in taken] == list(range(21))
    store.ack("imaging", [e.id for e in taken])
    assert store.read_group("imaging", "node2") == []
    store.close()


def test_processes_creating_a_fresh_store_together(backend: str, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    """Workers started at once on an empty state directory (or Redis prefix) all open it:
    the schema is created once, atomically."""
    overrides = backend_overrides(backend, request)
    procs = [spawn("claimer", tmp_path, overrides, "0", str(tmp_path / f"o{i}.json"))
             for i in range(6)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    store = open_state_store(make_config(tmp_path, **overrides))
    assert store.schema_version() >= 1 and store.blocks() == []
    store.close()
