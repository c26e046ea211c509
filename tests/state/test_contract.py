"""The StateStore contract, one suite run unchanged against SQLite and a real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from contimg_dask.config import PipelineConfig
from contimg_dask.errors import CasaError, InputError, LeaseLostError, StateError
from contimg_dask.io.uvh5.discovery import nearby_block_ids
from contimg_dask.stages.contract import Product, Provenance, StageResult
from contimg_dask.state import MetricSample, Solutions, StateStore, open_state_store
from contimg_dask.state.reaper import Reaper
from contimg_dask.state.records import FailureRecord, Lease

BLOCK = "2026-03-01T12:00:00"
BLOCK2 = "2026-03-01T12:05:09"


def result_for(lease: Lease, path: str = "/p/x.zarr", collection: str | None = None,
               config: dict | None = None) -> StageResult:
    """A result with two products (three with ``collection``: a product of that collection
    with its own inputs) and, if given, the configuration itself in its provenance."""
    of_collection = () if collection is None else (Product(
        "mosaic", Path(f"/m/{collection}.fits"), "sha256:cd", collection=collection,
        inputs=("/i/a.fits", "/i/b.fits")),)
    return StageResult(
        stage=lease.stage, block_id=lease.block_id,
        products=(Product("block_store", Path(path), "sha256:ab"),
                  Product("png", Path(path + ".png")), *of_collection),
        provenance=Provenance(inputs=("/in/a.hdf5",), config_hash="c0ffee",
                              versions={"numpy": "2.0"}, command="contimg ingest",
                              config=config),
        figures={"flagged_fraction": 0.125, "n_rows": 10, "ok": True, "note": None},
        seconds=12.5, finished_at=1.77e9)


def raise_and_catch(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def test_a_file_joins_the_nearest_block_within_the_tolerance(store: StateStore) -> None:
    def near(stamp: str) -> list[str]:
        return nearby_block_ids(stamp, 90.0)

    assert store.register_file_near(near(BLOCK), "/in/a03.hdf5", 3) == (BLOCK, True)
    # 4 s earlier: joins BLOCK (the grouper's rule), whoever registers it
    assert store.register_file_near(near("2026-03-01T11:59:56"), "/in/a00.hdf5", 0) == (
        BLOCK, True)
    assert store.register_file_near(near(BLOCK), "/in/a05.hdf5", None) == (BLOCK, True)
    # registered already: it stays in its block, by either call
    assert store.register_file_near(near(BLOCK2), "/in/a00.hdf5", 0) == (BLOCK, False)
    assert store.register_file(BLOCK2, "/in/a00.hdf5", 0) is False
    # 309 s later, beyond the tolerance: a block of its own; a file between joins the nearer
    assert store.register_file_near(near(BLOCK2), "/in/b00.hdf5", 0) == (BLOCK2, True)
    assert store.register_file_near(near("2026-03-01T12:04:00"), "/in/b01.hdf5", 1) == (
        BLOCK2, True)
    assert store.block(BLOCK).n_files == 3 and store.block(BLOCK2).n_files == 2
    assert sorted((f.path, f.block_id, f.subband) for f in store.files(BLOCK)) == [
        ("/in/a00.hdf5", BLOCK, 0), ("/in/a03.hdf5", BLOCK, 3), ("/in/a05.hdf5", BLOCK, None)]


def test_watchers_racing_agree_on_the_blocks(store_config: Callable[..., PipelineConfig]
                                             ) -> None:
    """Two connections register one block's 16 files (names seconds apart) in opposite
    orders at once: one block with all 16, each file once."""
    stamps = [f"2026-03-01T12:00:{s:02d}" for s in range(0, 32, 2)]
    files = [(stamp, f"/in/{stamp}_sb{sb:02d}.hdf5", sb) for sb, stamp in enumerate(stamps)]
    stores = [open_state_store(store_config()) for _ in range(2)]
    start = threading.Barrier(2)

    def register(store: StateStore, order: list) -> list[tuple[str, bool]]:
        start.wait()
        return [store.register_file_near(nearby_block_ids(stamp, 90.0), path, sb)
                for stamp, path, sb in order]

    try:
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(register, stores, [files, files[::-1]]))
        blocks = stores[0].blocks()
        assert len(blocks) == 1 and blocks[0].n_files == 16, blocks
        assert {b for results in outcomes for b, _ in results} == {blocks[0].block_id}
        assert sum(new for results in outcomes for _, new in results) == 16
    finally:
        for opened in stores:
            opened.close()


def test_files_register_once_and_blocks_count_them(store: StateStore) -> None:
    assert store.register_file(BLOCK, "/in/sb00.hdf5", 0) is True
    assert store.register_file(BLOCK, "/in/sb00.hdf5", 0) is False
    assert store.register_file(BLOCK, "/in/sb01.hdf5", 1) is True
    assert store.register_file(BLOCK2, "/in/b2_sb00.hdf5", 0) is True
    block = store.block(BLOCK)
    assert (block.status, block.n_files, block.sealed_at) == ("open", 2, None)
    assert [f.path for f in store.files(BLOCK)] == ["/in/sb00.hdf5", "/in/sb01.hdf5"]
    # Subband order, a file without a subband number last (both backends alike).
    assert store.register_file(BLOCK2, "/in/a_no_subband.hdf5", None) is True
    assert store.register_file(BLOCK2, "/in/b2_sb01.hdf5", 1) is True
    assert [f.path for f in store.files(BLOCK2)] == [
        "/in/b2_sb00.hdf5", "/in/b2_sb01.hdf5", "/in/a_no_subband.hdf5"]
    assert [b.block_id for b in store.blocks()] == [BLOCK, BLOCK2]
    assert store.block("1999-01-01T00:00:00") is None


def test_blocks_seal_complete_or_partial_at_the_deadline(store: StateStore) -> None:
    for sb in range(16):
        store.register_file(BLOCK, f"/in/a{sb:02d}.hdf5", sb)
    for sb in range(13):
        store.register_file(BLOCK2, f"/in/b{sb:02d}.hdf5", sb)
    first = store.block(BLOCK2).first_seen
    assert store.seal_block(BLOCK, 16, 600) == "complete"
    assert store.seal_block(BLOCK2, 16, 600, now=first + 599) == "open"
    assert store.seal_block(BLOCK2, 16, 600, now=first + 601) == "partial"
    store.register_file(BLOCK2, "/in/b13.hdf5", 13)  # a late file does not reopen it
    assert store.seal_block(BLOCK2, 14, 600) == "partial"
    assert [b.block_id for b in store.blocks("partial")] == [BLOCK2]
    sealed = [e.data for e in store.events() if e.kind == "block_sealed"]
    assert sealed == [{"block_id": BLOCK, "status": "complete", "n_files": 16},
                      {"block_id": BLOCK2, "status": "partial", "n_files": 13}]
    with pytest.raises(StateError, match="no block"):
        store.seal_block("1999-01-01T00:00:00", 16, 600)


def test_an_open_block_is_renamed_with_its_files(store: StateStore) -> None:
    earlier = "2026-03-01T11:59:58"
    store.register_file(BLOCK, "/in/sb03.hdf5", 3)
    store.register_file(BLOCK, "/in/sb00.hdf5", 0)
    first_seen = store.block(BLOCK).first_seen
    assert store.rename_block(BLOCK, earlier) is True
    assert store.block(BLOCK) is None and store.files(BLOCK) == []
    block = store.block(earlier)
    assert (block.block_id, block.status, block.n_files, block.first_seen) == (
        earlier, "open", 2, first_seen)
    assert [(f.block_id, f.path, f.subband) for f in store.files(earlier)] == [
        (earlier, "/in/sb00.hdf5", 0), (earlier, "/in/sb03.hdf5", 3)]
    assert [b.block_id for b in store.blocks()] == [earlier]
    assert store.register_file(earlier, "/in/sb01.hdf5", 1) is True
    assert store.block(earlier).n_files == 3
    # Refused: onto an existing block, once sealed, once it has stages; no such block.
    store.register_file(BLOCK2, "/in/b2.hdf5", 0)
    assert store.rename_block(BLOCK2, earlier) is False
    store.seal_block(earlier, 3, 600)
    assert store.rename_block(earlier, BLOCK) is False
    store.enqueue(BLOCK2, "ingest")
    assert store.rename_block(BLOCK2, "2026-03-01T12:05:00") is False
    assert [b.block_id for b in store.blocks()] == [earlier, BLOCK2]
    with pytest.raises(StateError, match="no block"):
        store.rename_block("1999-01-01T00:00:00", BLOCK)


def test_claims_in_block_then_queue_order_with_increasing_fencing_tokens(store: StateStore) -> None:
    assert store.claim("w", 60) is None
    for block in (BLOCK, BLOCK2):
        for stage in ("ingest", "flag"):
            assert store.enqueue(block, stage) is True
    assert store.enqueue(BLOCK, "ingest") is False
    flag = store.claim("w0", 60, stages=["flag"])
    assert (flag.block_id, flag.stage) == (BLOCK, "flag")
    assert store.claim("w0", 60, stages=[]) is None
    rest = [store.claim(f"w{i}", 60) for i in range(3)]
    assert [(lease.block_id, lease.stage) for lease in rest] == [
        (BLOCK, "ingest"), (BLOCK2, "ingest"), (BLOCK2, "flag")]
    tokens = [flag.token] + [lease.token for lease in rest]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4
    assert store.claim("w", 60) is None
    status = store.stage_status(BLOCK2, "ingest")
    assert (status.status, status.attempts, status.worker, status.token) == (
        "running", 1, "w1", rest[1].token)
    assert status.expires_at == pytest.approx(time.time() + 60, abs=5)


def test_complete_records_the_stage_result_as_it_is(store: StateStore) -> None:
    store.enqueue(BLOCK, "ingest")
    lease = store.claim("w", 60)
    result = result_for(lease)
    store.complete(lease, result)
    status = store.stage_status(BLOCK, "ingest")
    assert status.status == "done"
    assert status.result == result.to_dict()
    products = store.products(BLOCK)
    assert [(p.kind, p.path, p.checksum, p.token) for p in products] == [
        ("block_store", "/p/x.zarr", "sha256:ab", lease.token),
        ("png", "/p/x.zarr.png", None, lease.token)]
    assert products[0].provenance == result.provenance.to_dict()
    assert [p.path for p in store.products(kind="png")] == ["/p/x.zarr.png"]
    done = [e.data for e in store.events() if e.kind == "stage_done"]
    assert done == [{"block_id": BLOCK, "stage": "ingest", "token": lease.token,
                     "seconds": 12.5}]


def test_collection_products_and_configurations(store: StateStore) -> None:
    """A product of a collection (an hourly mosaic recorded by each block's run) keeps its
    collection and its own inputs; the run's configuration is kept once per hash, apart
    from the products and the stage result, which carry its hash."""
    config = {"environment": "testing", "imaging": {"niter": 1000, "cell_arcsec": 10.0}}
    for block in (BLOCK, BLOCK2):
        store.enqueue(block, "mosaic")
        lease = store.claim("w", 60)
        store.complete(lease, result_for(lease, f"/p/{block}", collection="mosaic-h",
                                         config=config))
    mosaics = store.products(kind="mosaic")
    assert [(p.block_id, p.collection, p.path) for p in mosaics] == [
        (BLOCK, "mosaic-h", "/m/mosaic-h.fits"), (BLOCK2, "mosaic-h", "/m/mosaic-h.fits")]
    assert mosaics[0].provenance["inputs"] == ["/i/a.fits", "/i/b.fits"]
    (png,) = store.products(BLOCK, kind="png")
    assert png.collection is None and png.provenance["inputs"] == ["/in/a.hdf5"]
    for record in (*mosaics, png):
        assert record.provenance["config_hash"] == "c0ffee"
        assert "config" not in record.provenance
    assert "config" not in store.stage_status(BLOCK, "mosaic").result["provenance"]
    assert store.configuration("c0ffee") == config
    assert store.configuration("0ther") is None
    assert store.configurations() == {"c0ffee": config}


def test_transient_failures_retry_until_max_attempts(store_config: Callable[..., PipelineConfig],
                                                     ) -> None:
    store = open_state_store(store_config(**{"state.max_attempts": 2}))
    store.enqueue(BLOCK, "image")
    store.enqueue(BLOCK2, "image")
    first = store.claim("w", 60)
    error = raise_and_catch(CasaError("tclean timed out", file="/p/a.ms"))
    assert store.fail(first, error) == "pending"
    # Requeued in its block's place: the older block's stage is claimed first again.
    second = store.claim("w", 60)
    assert (second.block_id, second.attempt) == (BLOCK, 2)
    assert store.claim("w", 60).block_id == BLOCK2
    assert second.token > first.token
    assert store.fail(second, raise_and_catch(CasaError("tclean timed out", file="/p/a.ms"))
                      ) == "failed"
    status = store.stage_status(BLOCK, "image")
    assert (status.status, status.attempts, status.error["error"]) == ("failed", 2, "CasaError")
    failures = store.failures(block_id=BLOCK)
    assert [(f.error, f.transient, f.input, f.stage) for f in failures] == [
        ("CasaError", True, "/p/a.ms", "image")] * 2
    assert failures[0].traceback_digest is not None  # same raise site, same digest
    assert failures[0].traceback_digest == failures[1].traceback_digest
    assert store.enqueue(BLOCK, "image") is False
    assert store.enqueue(BLOCK, "image", retry_failed=True) is True
    assert store.stage_status(BLOCK, "image").status == "pending"
    store.close()


def test_redo_requeues_a_done_stage_whose_product_went_missing(store: StateStore) -> None:
    store.enqueue(BLOCK, "ingest")
    first = store.claim("w", 60)
    store.complete(first, result_for(first))
    assert store.enqueue(BLOCK, "ingest") is False
    assert store.enqueue(BLOCK, "ingest", retry_failed=True) is False  # not failed
    assert store.enqueue(BLOCK, "ingest", redo=True) is True
    assert store.stage_status(BLOCK, "ingest").status == "pending"
    again = store.claim("w", 60)
    assert (again.block_id, again.stage) == (BLOCK, "ingest") and again.token > first.token
    assert store.enqueue(BLOCK, "ingest", redo=True) is False  # running: left alone
    store.complete(again, result_for(again))
    tokens = sorted(p.token for p in store.products(BLOCK, kind="block_store"))
    assert tokens == [first.token, again.token]  # the earlier record stays


def test_permanent_failure_fails_at_once_and_bugs_are_permanent(store: StateStore) -> None:
    store.enqueue(BLOCK, "ingest")
    store.enqueue(BLOCK2, "ingest")
    lease = store.claim("w", 60)
    assert store.fail(lease, InputError("truncated file", file="/in/sb03.hdf5")) == "failed"
    lease = store.claim("w", 60)
    assert store.fail(lease, raise_and_catch(KeyError("n_ants")), input="/in/x") == "failed"
    recorded = store.failures()
    assert [(f.error, f.transient, f.input) for f in recorded] == [
        ("InputError", False, "/in/sb03.hdf5"), ("KeyError", False, "/in/x")]


def test_stale_holder_is_rejected_and_recorded(store: StateStore) -> None:
    store.enqueue(BLOCK, "flag")
    old = store.claim("old", 0.2)
    assert store.heartbeat(old, 0.2).token == old.token
    time.sleep(0.3)
    assert [(r.block_id, r.token) for r in store.reap()] == [(BLOCK, old.token)]
    new = store.claim("new", 60)
    assert new.token > old.token and new.attempt == 2
    for call in (lambda: store.complete(old, result_for(old)),
                 lambda: store.heartbeat(old, 60),
                 lambda: store.fail(old, CasaError("late"))):
        with pytest.raises(LeaseLostError, match=f"token {old.token} refused") as info:
            call()
        assert info.value.block == BLOCK and not info.value.transient
    assert store.stage_status(BLOCK, "flag").token == new.token
    store.complete(new, result_for(new))
    assert store.stage_status(BLOCK, "flag").result["stage"] == "flag"
    rejected = [e.data for e in store.events() if e.kind == "lease_rejected"]
    assert [r["token"] for r in rejected] == [old.token] * 3
    kinds = [(f.error, f.worker) for f in store.failures()]
    assert kinds == [("LeaseExpired", "old")] + [("LeaseLostError", "old")] * 3
    assert [p.token for p in store.products(BLOCK)] == [new.token, new.token]


def test_expired_lease_is_reaped_within_lease_plus_interval(store: StateStore,
                                                            store_config: Callable) -> None:
    settings = store_config().state
    store.enqueue(BLOCK, "ingest")
    lease_s = 1.0
    reaper = Reaper(store, settings.reaper_interval_s).start()
    try:
        lease = store.claim("dying-worker", lease_s)
        while store.stage_status(BLOCK, "ingest").status == "running":
            assert time.time() < lease.expires_at + 3 * settings.reaper_interval_s
            time.sleep(0.02)
    finally:
        reaper.stop()
    # The store stamps the reaping (updated_at, on the clock that set expires_at): no
    # earlier than the expiry and no later than one reaper interval after it (+ 0.25 s for
    # the reaper thread's scheduling on a loaded machine).
    reaped_at = store.stage_status(BLOCK, "ingest").updated_at
    assert 0 <= reaped_at - lease.expires_at <= settings.reaper_interval_s + 0.25
    assert reaper.reaped == 1
    assert store.stage_status(BLOCK, "ingest").status == "pending"


def test_reaped_stage_fails_after_max_attempts(store: StateStore,
                                               store_config: Callable) -> None:
    store.enqueue(BLOCK, "ingest")
    for attempt in range(1, store_config().state.max_attempts + 1):
        lease = store.claim("oom", 0.01)
        assert lease.attempt == attempt
        store.reap(now=lease.expires_at + 1)
    assert store.stage_status(BLOCK, "ingest").status == "failed"
    assert store.claim("w", 60) is None


def test_two_workers_claim_the_oldest_block_first_after_a_reaped_lease(
        store: StateStore, store_config: Callable[..., PipelineConfig]) -> None:
    """Two workers (each its own connection) share one queue of three blocks' ingests,
    queued newest first. The oldest block's lease expires and is reaped: that stage is
    claimed next, before the newest block's, whichever worker asks; then the newest."""
    blocks = [f"2026-03-01T12:{minute:02d}:00" for minute in (10, 5, 0)]
    for block in blocks:
        store.enqueue(block, "ingest")
    other = open_state_store(store_config())
    try:
        dying = store.claim("w1", 0.01)
        running = other.claim("w2", 60)
        assert (dying.block_id, running.block_id) == (blocks[2], blocks[1])
        assert [lease.block_id for lease in store.reap(now=dying.expires_at + 1)] == [
            blocks[2]]
        again, last = other.claim("w2", 60), store.claim("w1", 60)
        assert (again.block_id, again.attempt, last.block_id) == (blocks[2], 2, blocks[0])
        assert store.claim("w1", 60) is None and other.claim("w2", 60) is None
    finally:
        other.close()


def test_calibration_registry(store: StateStore) -> None:
    day = 86400.0

    def solutions(sid: str, dec: float, start: float, status: str = "valid") -> Solutions:
        return Solutions(sid, f"/cal/{sid}.zarr", dec, start, start + day, "3C286",
                         f"blk-{sid}", status, start)

    t0 = 1.77e9
    assert store.register_solutions(solutions("a", 71.0, t0)) is True
    assert store.register_solutions(solutions("a", 99.0, t0)) is False
    store.register_solutions(solutions("b", 71.1, t0 + 0.5 * day))
    store.register_solutions(solutions("c", 71.0, t0 + 0.7 * day, status="solving"))
    store.register_solutions(solutions("d", 40.0, t0 + 0.7 * day))
    assert store.solutions_for(71.0, t0 + 0.6 * day, 0.5).solutions_id == "b"
    assert store.solutions_for(71.0, t0 + 0.2 * day, 0.5).solutions_id == "a"
    assert store.solutions_for(71.0, t0 + 0.6 * day, 0.05).solutions_id == "a"
    assert store.solutions_for(71.0, t0 + 3 * day, 0.5) is None
    assert store.solutions_for(55.0, t0 + 0.8 * day, 0.5) is None
    store.set_solutions_status("c", "valid")
    assert store.solutions_for(71.0, t0 + 0.8 * day, 0.5).solutions_id == "c"
    store.set_solutions_status("c", "retired")
    assert store.solutions_for(71.0, t0 + 0.8 * day, 0.5).solutions_id == "b"
    with pytest.raises(StateError, match="no solutions zz"):
        store.set_solutions_status("zz", "valid")
    store.record_solutions_use(BLOCK2, "b")
    store.record_solutions_use(BLOCK, "b")
    store.record_solutions_use(BLOCK, "b")
    assert store.solutions_users("b") == [BLOCK, BLOCK2]
    assert store.solutions_users("a") == []


def test_events_page_in_order(store: StateStore) -> None:
    ids = [store.emit("note", {"i": i}) for i in range(25)]
    first = store.events(count=10)
    assert [e.data["i"] for e in first] == list(range(10))
    rest = store.events(after=first[-1].id, count=100)
    assert [e.data["i"] for e in rest] == list(range(10, 25))
    assert [e.id for e in first + rest] == ids


def test_events_are_delivered_at_least_once(store: StateStore,
                                            store_config: Callable) -> None:
    for i in range(5):
        store.emit("note", {"i": i})
    got = store.read_group("alerts", "c1", count=3)
    assert [e.data["i"] for e in got] == [0, 1, 2]
    store.ack("alerts", [got[0].id])
    # Not acknowledged: the same consumer gets them again first, then the new ones.
    again = store.read_group("alerts", "c1", count=10)
    delivered_at = time.monotonic()
    assert [e.data["i"] for e in again] == [1, 2, 3, 4]
    # Another group has its own position.
    assert len(store.read_group("dashboard", "d1", count=10)) == 5
    # Another consumer of the group takes over what c1 left once it is idle long enough.
    quick = open_state_store(store_config(**{"state.event_redelivery_s": 1.0}))
    early = quick.read_group("alerts", "c2")
    if time.monotonic() - delivered_at < 0.9:  # not yet idle (unless the machine stalled)
        assert early == []
    time.sleep(1.1)
    taken = quick.read_group("alerts", "c2")
    assert [e.data["i"] for e in taken] == [1, 2, 3, 4]
    assert quick.ack("alerts", [e.id for e in taken]) == 4
    store.emit("note", {"i": 5})
    assert [e.data["i"] for e in store.read_group("alerts", "c1")] == [5]
    quick.close()


def test_metrics_at_three_rates(store: StateStore) -> None:
    rng = np.random.default_rng(3)
    t0 = 1.77e9 - (1.77e9 % 60)
    at = t0 + np.sort(rng.uniform(0, 300, 400))
    values = rng.normal(10, 2, 400)
    blocks = np.where(at < t0 + 150, BLOCK, BLOCK2)
    samples = [MetricSample("noise_mjy", float(v), float(t), str(b))
               for v, t, b in zip(values, at, blocks, strict=True)]
    store.record_metrics(samples[:250])
    store.record_metrics(samples[250:])
    raw = store.metric_series("noise_mjy", "raw")
    np.testing.assert_allclose([p.mean for p in raw], values)
    np.testing.assert_allclose([p.key for p in raw], at)
    minute = store.metric_series("noise_mjy", "minute")
    edges = (at // 60) * 60
    assert [p.key for p in minute] == [int(m) for m in np.unique(edges)]
    for point in minute:
        inside = values[edges == point.key]
        assert point.count == inside.size
        assert point.mean == pytest.approx(inside.mean(), rel=1e-12)
        assert (point.min, point.max) == (pytest.approx(inside.min()),
                                          pytest.approx(inside.max()))
    per_block = store.metric_series("noise_mjy", "block")
    assert [p.key for p in per_block] == [BLOCK, BLOCK2]
    for point in per_block:
        inside = values[blocks == point.key]
        assert point.count == inside.size
        assert point.mean == pytest.approx(inside.mean(), rel=1e-12)
    window = store.metric_series("noise_mjy", "raw", since=t0 + 100, until=t0 + 200)
    assert len(window) == int(((at >= t0 + 100) & (at <= t0 + 200)).sum())


def test_retention_prunes_each_rate(store: StateStore, store_config: Callable) -> None:
    keep = store_config().state.retention
    day = 86400.0
    now = 1.8e9
    old_raw = now - keep.raw_days * day - 10  # raw gone, its minute kept
    store.record_metrics([MetricSample("m", 1.0, old_raw, BLOCK),
                          MetricSample("m", 3.0, now - 10, BLOCK2)])
    removed = store.prune(now=now)
    assert removed["raw"] == 1 and removed["minute"] == 0
    assert [p.mean for p in store.metric_series("m", "raw")] == [3.0]
    assert len(store.metric_series("m", "minute")) == 2
    assert len(store.metric_series("m", "block")) == 2  # block_days: null keeps forever
    store.emit("old", {})
    assert store.prune(now=time.time() + keep.events_days * day + 60)["events"] >= 1
    assert store.events() == []


def test_status_counts_every_state_as_the_stage_records_say(store: StateStore) -> None:
    """Three blocks, every stage state (done, failed, pending fresh and requeued after a
    transient failure, running, running with an expired lease): status() counts what
    stages() lists, counted here independently, and lists the running leases."""
    for block in (BLOCK, BLOCK2, "2026-03-01T12:10:18"):
        for stage in ("ingest", "flag", "calibrate_solve", "image"):
            store.enqueue(block, stage)
    for _ in range(4):
        lease = store.claim("w1", 60)
        store.complete(lease, result_for(lease))
    store.fail(store.claim("w2", 60), InputError("bad file", file="/in/x.hdf5"))
    store.fail(store.claim("w3", 60), CasaError("tclean crashed"))  # transient: pending
    expired = store.claim("w4", 0.01)
    running = [store.claim("w5", 60), store.claim("w6", 60)]
    time.sleep(0.05)
    expected: dict[str, dict[str, int]] = {}
    for s in store.stages():
        expected.setdefault(s.stage, {}).setdefault(s.status, 0)
        expected[s.stage][s.status] += 1
    status = store.status()
    assert status["stages"] == {k: dict(sorted(v.items())) for k, v in sorted(
        expected.items())}
    assert sum(n for c in status["stages"].values() for n in c.values()) == 12
    assert {st for c in status["stages"].values() for st in c} == {
        "done", "failed", "pending", "running"}
    assert status["backlog"] == sum(c.get("pending", 0) for c in expected.values()) == 4
    assert sorted((x["block_id"], x["stage"], x["worker"], x["token"], x["attempt"])
                  for x in status["leases"]) == sorted(
        (lease.block_id, lease.stage, lease.worker, lease.token, lease.attempt)
        for lease in [expired, *running])
    assert status["expired_leases"] == 1


def test_status_summarises_blocks_stages_leases_and_backlog(store: StateStore) -> None:
    store.register_file(BLOCK, "/in/a.hdf5", 0)
    store.seal_block(BLOCK, 1, 600)
    for stage in ("ingest", "flag", "calibrate"):
        store.enqueue(BLOCK, stage)
    lease = store.claim("w7", 60)
    store.complete(lease, result_for(lease))
    running = store.claim("w8", 60)
    store.record_failure(FailureRecord.from_exception(
        CasaError("x"), block_id=BLOCK, stage="flag", worker="w8", at=time.time()))
    status = store.status()
    assert status["backend"] == store.backend
    assert status["blocks"] == {"complete": 1}
    assert status["stages"] == {"calibrate": {"pending": 1}, "flag": {"running": 1},
                                "ingest": {"done": 1}}
    assert status["backlog"] == 1
    assert [(x["worker"], x["token"]) for x in status["leases"]] == [("w8", running.token)]
    assert 55 < status["leases"][0]["expires_in_s"] <= 60
    assert status["recent_failures"] == 1
