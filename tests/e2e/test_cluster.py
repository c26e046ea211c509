"""The pipeline on a real Dask cluster with its state in a real Redis, all on 127.0.0.1: a
``dask scheduler``, two ``dask worker --resources CASA=1`` processes (each under its nanny)
and a ``redis-server``, started here on free ports.

- CASA processes go to workers holding the ``CASA`` resource: never two at once on a worker.
- ``contimg run`` with only ``dask.scheduler_address`` and ``state.backend: redis`` set:
  every block done; its products' values are the reference for the trials below.
- A worker SIGKILLed while its tasks of a stage run: the block completes, products
  value-identical to the clean run, nothing recorded twice.
- The scheduler SIGKILLed during a stage and restarted on its port: the pipeline's client
  reconnects, the lost computation is retried, every block completes.
- Two ``contimg watch`` processes (own working directories, shared stores and products as
  on a cluster's shared file system) on one incoming directory and one Redis: every block
  processed exactly once.

The recipe is ingest -> flag -> export (a Measurement Set): deterministic stages, so a run
after a fault must give the same values as a clean one (tclean would add a minute per block
and no new way of running on the cluster: its CASA process is placed like the one tested
here).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from contimg_dask.casa import run_casa
from contimg_dask.config import PipelineConfig
from contimg_dask.io.uvh5.discovery import discover_blocks
from contimg_dask.pipeline import Pipeline
from contimg_dask.pipeline.cluster import dask_client
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.layout import block_slug
from contimg_dask.state import StateStore, open_state_store
from contimg_dask.testing.cluster import DaskProcesses, casa_process_span, wait_until
from contimg_dask.testing.streaming import (
    Feeder,
    block_outcomes,
    integrity_problems,
    start_watch,
    stop_watch,
)
from tests.helpers import make_config, ms_digests
from tests.state.redis_process import RedisProcess

pytestmark = pytest.mark.slow

RECIPE = "[{stage: ingest}, {stage: flag}, {stage: export}]"
RECIPES = f"{{calibrator: {RECIPE}, target: {RECIPE}}}"
STAGES = ("ingest", "flag", "export")
N_BLOCKS = 2
SETTLE_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("staged")
    out = root / "blocks"
    simulate_blocks(make_config(root), out,
                    SimulationOptions(preset="small", n_blocks=N_BLOCKS, seed=11))
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    """Two workers of 2 threads each, ``CASA=1`` each; ``w1`` also declares ``MEMORY=1``
    (the big-memory node)."""
    from distributed import Client

    processes = DaskProcesses(tmp_path_factory.mktemp("dask"), n_workers=2, nthreads=2,
                              resources=["CASA=1", "CASA=1,MEMORY=1"]).start()
    try:
        with Client(processes.address, timeout=60) as client:
            processes.wait(client)
        yield processes
    finally:
        processes.stop()


def cluster_overrides(cluster: DaskProcesses, redis: RedisProcess, instance: str
                      ) -> dict[str, object]:
    """The only settings a cluster run needs beyond a single machine's."""
    return {"dask.scheduler_address": cluster.address, "state.backend": "redis",
            "state.url": redis.url, "state.instance": instance,
            "pipeline.recipes": RECIPES, "state.lease_s": 10.0}


def cluster_config(root: Path, overrides: dict[str, object]) -> PipelineConfig:
    return make_config(root, **{k: yaml.safe_load(v) if isinstance(v, str) else v
                                for k, v in overrides.items()})


def store_digest(store: Path) -> str:
    """SHA-256 of the values of every array of a block store's data (visibilities, each
    flag version, weights, UVWs, ...), in the order of their names."""
    from contimg_dask.io.store.block_store import block_node, open_block

    ds = block_node(open_block(store)).to_dataset(inherit=False)
    digest = hashlib.sha256()
    for name in sorted(ds.data_vars):
        digest.update(np.ascontiguousarray(ds[name].values).tobytes())
    return digest.hexdigest()


def product_digests(state: StateStore) -> dict[tuple[str, str, str], object]:
    """(block, stage, kind) to the values of the product recorded last: a block store's
    arrays, a Measurement Set's columns (:func:`tests.helpers.ms_digests`)."""
    out: dict[tuple[str, str, str], object] = {}
    for product in state.products():
        path = Path(product.path)
        value = (ms_digests(path) if path.suffix == ".ms" else
                 store_digest(path) if path.suffix == ".zarr" else
                 hashlib.sha256(path.read_bytes()).hexdigest())
        out[(product.block_id, product.stage, product.kind)] = value
    return out


def comparable(digests: dict[tuple[str, str, str], object]) -> Counter:
    """The digests without their block ids (a watcher names a block after its first file
    to arrive, ``contimg run`` after its earliest), Measurement Sets by their main table's
    columns (the block id is in the metadata)."""
    out: Counter = Counter()
    for (_, stage, kind), value in digests.items():
        if isinstance(value, dict):
            value = tuple(sorted((k, v) for k, v in value.items()
                                 if k.startswith("MAIN:") and k != "MAIN:keywords"))
        out[(stage, kind, value)] += 1
    return out


def stage_done_counts(state: StateStore) -> Counter:
    """``stage_done`` events per (block, stage), over the whole event stream."""
    counts: Counter = Counter()
    after = None
    while events := state.events(after=after, count=500):
        for event in events:
            if event.kind == "stage_done":
                counts[(event.data["block_id"], event.data["stage"])] += 1
        after = events[-1].id
    return counts


def assert_clean(state: StateStore, config: PipelineConfig, blocks: int) -> None:
    """Every block done, each stage done once, nothing running or pending, no product
    recorded twice, absent, half-written or orphaned."""
    pipeline = Pipeline(config, state=state)
    outcomes = block_outcomes(pipeline)
    assert sorted(outcomes.values()) == ["done"] * blocks, outcomes
    assert not state.stages(status="running") and not state.stages(status="pending")
    counts = stage_done_counts(state)
    assert set(counts.values()) == {1}, counts
    assert len(counts) == blocks * len(STAGES)
    paths = config.paths.resolved()
    assert integrity_problems(state, [paths.products, paths.stores]) == []


@pytest.fixture(scope="module")
def clean_run(staged: Path, cluster: DaskProcesses, redis_server: RedisProcess,
              tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``contimg run`` on the staged blocks: the reference products."""
    root = tmp_path_factory.mktemp("clean")
    overrides = cluster_overrides(cluster, redis_server, "clean")
    sets = [a for k, v in {"paths.root": str(root), **overrides}.items()
            for a in ("--set", f"{k}={v}")]
    run = subprocess.run([sys.executable, "-m", "contimg_dask.cli.main", "--env", "testing",
                          *sets, "run", str(staged), "--json"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    config = cluster_config(root, overrides)
    state = open_state_store(config)
    try:
        assert_clean(state, config, N_BLOCKS)
        return product_digests(state)
    finally:
        state.close()


def test_casa_processes_one_per_worker(cluster: DaskProcesses, tmp_path: Path) -> None:
    """Four CASA calls at once on two workers of two threads: each worker runs its CASA
    processes one after the other; without ``dask.casa_resource`` they run here."""
    from distributed import Client

    config = make_config(tmp_path, **{"dask.scheduler_address": cluster.address})
    with Client(cluster.address, timeout=60) as client:
        pids = cluster.worker_pids(client)
        with ThreadPoolExecutor(4) as pool:
            spans = list(pool.map(lambda _: run_casa(config, casa_process_span, 3.0),
                                  range(4)))
        by_worker: dict[int, list[tuple[float, float]]] = {}
        for span in spans:
            by_worker.setdefault(span["parent"], []).append((span["start"], span["end"]))
        assert set(by_worker) == set(pids.values()), (by_worker, pids)
        for intervals in by_worker.values():
            intervals.sort()
            for (_, end), (start, _) in itertools.pairwise(intervals):
                assert start >= end, intervals  # one CASA process at a time per worker
        here = make_config(tmp_path, **{"dask.scheduler_address": cluster.address,
                                        "dask.casa_resource": None})
        assert run_casa(here, casa_process_span, 0.0)["parent"] == os.getpid()


def test_batch_on_cluster_with_redis(clean_run: dict) -> None:
    """``contimg run`` with a scheduler address and Redis: both blocks, every stage's
    products (checked in the fixture: all done, each stage once, nothing orphaned)."""
    kinds = Counter((stage, kind) for _, stage, kind in clean_run)
    assert kinds == {("ingest", "block_store"): N_BLOCKS, ("flag", "block_store"): N_BLOCKS,
                     ("export", "ms"): N_BLOCKS}
    stores = [v for (_, stage, _), v in clean_run.items() if stage == "flag"]
    assert len(set(stores)) == N_BLOCKS  # two different blocks, not one twice


def test_stage_resources_place_every_task(staged: Path, cluster: DaskProcesses,
                                          redis_server: RedisProcess, clean_run: dict,
                                          tmp_path: Path) -> None:
    """``dask.stage_resources`` asking ``MEMORY`` for every stage: each Dask task of each
    stage run by the orchestrator lands on ``w1``, the one worker declaring it; the
    products are the clean run's. (The pipeline's own small reads around a stage, such as
    looking for calibrators after ingest, run in the pipeline's process: before they did,
    they reached the cluster unplaced and landed on ``w0`` in one CI run in three.)"""
    from distributed import Client, get_task_stream

    config = cluster_config(tmp_path, {
        **cluster_overrides(cluster, redis_server, "placed"),
        "dask.stage_resources": {stage: {"MEMORY": 1} for stage in STAGES}})
    block = _blocks(staged, config)[0]
    used: Counter = Counter()
    with Client(cluster.address, timeout=60) as client, \
            Pipeline(config, client=client) as pipeline:
        names = {address: worker["name"]
                 for address, worker in client.scheduler_info(n_workers=-1)["workers"].items()}
        pipeline.submit(block)
        for stage in STAGES:
            pipeline.advance()  # queues the stage (after ingest: the block's kind found)
            lease = pipeline.state.claim(pipeline.worker, config.state.lease_s, [stage])
            assert lease is not None and lease.stage == stage
            with get_task_stream(client) as stream:  # read when the stage is done
                assert pipeline.run_lease(lease) == "done"
            used.update((stage, names.get(t["worker"], t["worker"])) for t in stream.data)
        digests = product_digests(pipeline.state)
    assert {worker for _, worker in used} == {"w1"}, used
    assert all(used[(stage, "w1")] > 0 for stage in STAGES), used
    assert digests == {k: v for k, v in clean_run.items() if k[0] == block.block_id}


def _run_in_thread(pipeline: Pipeline, blocks: list[BlockRef]) -> threading.Thread:
    def work() -> None:
        for block in blocks:
            pipeline.submit(block)
        pipeline.work()

    thread = threading.Thread(target=work, name="pipeline", daemon=True)
    thread.start()
    return thread


def _blocks(staged: Path, config: PipelineConfig) -> list[BlockRef]:
    """The staged blocks as ``contimg run`` submits them (pipeline/batch.py)."""
    stores = config.paths.resolved().stores
    return [BlockRef(b.block_id, stores / f"{block_slug(b.block_id)}.zarr",
                     tuple(Path(f.path) for _, f in sorted(b.files.items())))
            for b in discover_blocks(staged, config.blocks).blocks]


def _busy_worker(client, stage: str, state: StateStore) -> str | None:
    """The name of a worker processing tasks while ``stage`` is running, else None."""
    if not any(s.stage == stage for s in state.stages(status="running")):
        return None
    info = client.scheduler_info(n_workers=-1)["workers"]
    for address, keys in client.processing().items():
        if keys and address in info:
            return info[address]["name"]
    return None


def test_worker_killed_in_a_stage(staged: Path, cluster: DaskProcesses,
                                  redis_server: RedisProcess, clean_run: dict,
                                  tmp_path: Path) -> None:
    """SIGKILL to the worker computing the first block's ingest: the scheduler reruns its
    tasks elsewhere (or on the restarted worker), the block completes with the clean run's
    values, nothing twice in the state store."""
    from distributed import Client

    config = cluster_config(tmp_path, cluster_overrides(cluster, redis_server, "kill"))
    with Client(cluster.address, timeout=60) as client, \
            Pipeline(config, client=client) as pipeline:
        pids = cluster.worker_pids(client)
        thread = _run_in_thread(pipeline, _blocks(staged, config))
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while (victim := _busy_worker(client, "ingest", pipeline.state)) is None:
            assert time.monotonic() < deadline and thread.is_alive(), "no ingest tasks seen"
            time.sleep(0.02)
        os.kill(pids[victim], signal.SIGKILL)
        thread.join(SETTLE_TIMEOUT_S)
        assert not thread.is_alive()
        assert_clean(pipeline.state, config, N_BLOCKS)
        assert product_digests(pipeline.state) == clean_run
        cluster.wait(client)  # the nanny restarted the killed worker
        assert cluster.worker_pids(client)[victim] != pids[victim]


def test_scheduler_killed_and_restarted(staged: Path, cluster: DaskProcesses,
                                        redis_server: RedisProcess, clean_run: dict,
                                        tmp_path: Path) -> None:
    """SIGKILL to the scheduler during a stage's computation, a new one on the same port 3 s
    later: the pipeline's client reconnects, the stage fails transiently
    (``ClusterUnavailableError``, recorded) and runs again; every block completes with the
    clean run's values. The ``dask`` breaker (``fail_max`` 1 here) opened on the loss,
    paused the stages and closed on the trial that succeeded: its ``breaker`` events say so,
    and no other breaker moved."""
    from distributed import Client

    config = cluster_config(tmp_path, {
        **cluster_overrides(cluster, redis_server, "restart"),
        "pipeline.breaker.fail_max": 1, "pipeline.breaker.reset_timeout_s": 2.0})
    with dask_client(config.dask) as client, Pipeline(config, client=client) as pipeline:
        thread = _run_in_thread(pipeline, _blocks(staged, config))
        wait_until(lambda: _busy_worker(client, "flag", pipeline.state) is not None,
                   SETTLE_TIMEOUT_S, "tasks of flag on a worker", 0.02)
        cluster.kill_scheduler()
        time.sleep(3.0)
        cluster.start_scheduler()
        # The workers exit on losing the scheduler; a service manager starts them again.
        print(f"\nworkers restarted after the scheduler's loss: "
              f"{cluster.restart_exited_workers()}")
        with Client(cluster.address, timeout=60) as watcher:
            cluster.wait(watcher, timeout_s=120)
        thread.join(SETTLE_TIMEOUT_S)
        assert not thread.is_alive()
        assert_clean(pipeline.state, config, N_BLOCKS)
        assert product_digests(pipeline.state) == clean_run
        lost = [f for f in pipeline.state.failures(limit=1000)
                if f.error == "ClusterUnavailableError"]
        assert lost and all(f.transient for f in lost), pipeline.state.failures()
        breaker = [(e.data["name"], e.data["state"])
                   for e in pipeline.state.events(count=10_000) if e.kind == "breaker"]
    assert {name for name, _ in breaker} == {"dask"}, breaker
    assert breaker[0] == ("dask", "open") and breaker[-1] == ("dask", "closed"), breaker


def test_two_watchers_share_the_work(staged: Path, cluster: DaskProcesses,
                                     redis_server: RedisProcess, clean_run: dict,
                                     tmp_path: Path) -> None:
    """Two ``contimg watch`` processes, one incoming directory, one Redis: each block and
    stage done exactly once (one ``stage_done`` each), products and state agree and hold
    the clean run's values."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shared = {"paths.stores": str(tmp_path / "shared" / "stores"),
              "paths.products": str(tmp_path / "shared" / "products")}
    overrides = {**cluster_overrides(cluster, redis_server, "watchers"), **shared,
                 "logging.level": "INFO"}
    logs = [tmp_path / f"watch{i}.log" for i in range(2)]
    procs = [start_watch(incoming, tmp_path / f"host{i}", overrides, logs[i])
             for i in range(2)]
    config = cluster_config(tmp_path / "host0", overrides)
    state = open_state_store(config)
    try:
        feeder = Feeder(staged, incoming, block_interval_s=2.0, seed=3).start()
        pipeline = Pipeline(config, state=state)

        def settled() -> bool:
            for proc, log in zip(procs, logs, strict=True):
                assert proc.poll() is None, log.read_text()[-3000:]
            outcomes = block_outcomes(pipeline)
            return len(outcomes) == N_BLOCKS and set(outcomes.values()) == {"done"}

        wait_until(settled, SETTLE_TIMEOUT_S, "every block done", 0.5)
        feeder.join()
        assert_clean(state, config, N_BLOCKS)
        workers = Counter(s.worker for s in state.stages())
        print(f"\nstages run by {dict(workers)}")
        files = Counter(Path(f.path).name for b in state.blocks()
                        for f in state.files(b.block_id))
        assert set(files.values()) == {1} and len(files) == 16 * N_BLOCKS, files
        assert comparable(product_digests(state)) == comparable(clean_run)
    finally:
        for proc in procs:
            stop_watch(proc, signal.SIGTERM)
        state.close()
