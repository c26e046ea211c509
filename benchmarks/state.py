"""State store throughput: claims/s, completes/s, events/s and metric samples/s for SQLite
(local disk) and Redis (a real redis-server on loopback), with 1 and 8 processes.

    python -m benchmarks.state [--per-process 500]

Each configuration runs its processes in lock-step phases (a barrier before and after each),
timed by the parent: claim K stages each, complete them, emit K events each, record K
blocks' worth of metric samples each (100 samples per block, one call per block). Both
backends run with the durability we ship (SQLite ``synchronous FULL``, Redis
``appendfsync always``) and with the cheaper setting (NORMAL, everysec). Results land in
``benchmarks/results/state.json`` and ``.md``, with the headroom against a DSA-110 day.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.run import RESULTS
from contimg_dask.config import load_config
from contimg_dask.stages.contract import Product, Provenance, StageResult
from contimg_dask.state import MetricSample, open_state_store

# A DSA-110 day: one block every 309 s, ~10 stages per block, ~100 metric samples per block.
DAY_BLOCKS = 280
DAY_STAGES = DAY_BLOCKS * 10
DAY_SAMPLES = DAY_BLOCKS * 100
DAY_EVENTS = DAY_STAGES * 2  # a done/failed event per stage plus block and alert events
SAMPLES_PER_BLOCK = 100
PHASES = ("claims", "completes", "events", "metric_samples")


def _config(root: Path, overrides: dict[str, Any]):
    return load_config(environment="development", environ={},
                       overrides={"paths.root": str(root), **overrides})


def _worker(root: Path, overrides: dict[str, Any], index: int, k: int,
            barrier: Any) -> None:
    store = open_state_store(_config(root, overrides))
    provenance = Provenance(inputs=("in",), config_hash="h", versions={})
    barrier.wait()  # start claims
    leases = [store.claim(f"w{index}", 600) for _ in range(k)]
    barrier.wait()
    barrier.wait()  # start completes
    for lease in leases:
        store.complete(lease, StageResult(lease.stage, lease.block_id, (Product(
            "ms", Path(f"/p/{lease.block_id}.{lease.stage}")),), provenance, {"x": 1.0}))
    barrier.wait()
    barrier.wait()  # start events
    for i in range(k):
        store.emit("bench", {"worker": index, "i": i})
    barrier.wait()
    barrier.wait()  # start metrics
    t0 = time.time()
    for b in range(k):
        block = f"w{index}-b{b}"
        store.record_metrics([MetricSample(f"m{j % 10}", float(j), t0 + j, block)
                              for j in range(SAMPLES_PER_BLOCK)])
    barrier.wait()
    store.close()


def run_configuration(root: Path, overrides: dict[str, Any], n_procs: int,
                      k: int) -> dict[str, float]:
    """Rates (per second, all processes together) of the four phases."""
    store = open_state_store(_config(root, overrides))
    for b in range(n_procs * k // 10 + 1):
        for s in range(10):
            store.enqueue(f"blk{b:06d}", f"stage{s}")
    store.close()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(n_procs + 1)
    procs = [context.Process(target=_worker, args=(root, overrides, i, k, barrier))
             for i in range(n_procs)]
    for p in procs:
        p.start()
    rates = {}
    for phase in PHASES:
        barrier.wait()
        start = time.perf_counter()
        barrier.wait()
        seconds = time.perf_counter() - start
        count = n_procs * k * (SAMPLES_PER_BLOCK if phase == "metric_samples" else 1)
        rates[phase] = count / seconds
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"benchmark worker failed ({p.exitcode})")
    return rates


def main() -> None:
    from tests.state.redis_process import RedisProcess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-process", type=int, default=500,
                        help="claims, completes, events and metric blocks per process")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite state.md from the last state.json")
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((RESULTS / "state.json").read_text())
        write_results(saved["rows"], saved["per_process"])
        return
    k = args.per_process
    rows = []
    for backend, setting in (("sqlite", "FULL"), ("sqlite", "NORMAL"),
                             ("redis", "always"), ("redis", "everysec")):
        for n_procs in (1, 8):
            root = Path(tempfile.mkdtemp(prefix="state-bench-"))
            server = None
            try:
                if backend == "sqlite":
                    overrides = {"state.sqlite.synchronous": setting}
                else:
                    redis_settings = _config(root, {"state.redis.appendfsync": setting})
                    server = RedisProcess(root / "redis", redis_settings.state.redis).start()
                    overrides = {"state.backend": "redis", "state.url": server.url}
                rates = run_configuration(root, overrides, n_procs, k)
            finally:
                if server is not None:
                    server.stop()
                shutil.rmtree(root, ignore_errors=True)
            row = {"backend": backend, "durability": setting, "processes": n_procs, **rates}
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_results(rows, k)


def headroom(row: dict[str, float]) -> float:
    """How many DSA-110 days of state traffic the configuration carries per day: the
    smallest of claims, completes, events and metric samples."""
    day_s = 86400.0
    return min(row["claims"] * day_s / DAY_STAGES, row["completes"] * day_s / DAY_STAGES,
               row["events"] * day_s / DAY_EVENTS,
               row["metric_samples"] * day_s / DAY_SAMPLES)


def write_results(rows: list[dict[str, Any]], k: int) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "state.json").write_text(json.dumps(
        {"per_process": k, "rows": rows,
         "day": {"stages": DAY_STAGES, "events": DAY_EVENTS, "metric_samples": DAY_SAMPLES}},
        indent=2))
    lines = [
        "# State store throughput",
        "",
        f"`python -m benchmarks.state --per-process {k}` on this VM (2 cores shared with other "
        "work; SQLite on the local ext4 disk, Redis 7 on loopback). Rates are for all "
        "processes together, per second. Headroom = how many DSA-110 days of state traffic "
        f"({DAY_STAGES} claims and completes, {DAY_EVENTS} events, {DAY_SAMPLES} metric "
        "samples) the store carries per day, the smallest over the four.",
        "",
        "With FULL / always every write waits for an fsync (~6 ms on this VM's disk), which "
        "bounds one process; Redis shares one fsync among the writes of all clients waiting "
        "for it, SQLite does not (its writers take turns). The VM was shared with other "
        "work during the run (load average ~20 on 2 cores): a trial run with 50 per process "
        "differed by up to 2x in the 8-process rows.",
        "",
        "| backend | durability | processes | claims/s | completes/s | events/s | "
        "metric samples/s | headroom (days per day) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['durability']} | {r['processes']} | "
                     f"{r['claims']:.0f} | {r['completes']:.0f} | {r['events']:.0f} | "
                     f"{r['metric_samples']:.0f} | {headroom(r):,.0f} |")
    shipped = [r for r in rows if r["durability"] in ("FULL", "always")]
    worst = min(shipped, key=headroom)
    lines += [
        "",
        f"With the shipped durability (SQLite FULL, Redis appendfsync always) the smallest "
        f"headroom is {headroom(worst):,.0f}x ({worst['backend']}, {worst['processes']} "
        f"process{'es' if worst['processes'] > 1 else ''}): a DSA-110 day of state traffic "
        f"takes about {86400 / headroom(worst):.0f} s of store time. Bursts are small too: "
        "all ten stages of a block claimed within one second is 10 claims/s, against "
        f"{min(min(r['claims'], r['completes']) for r in shipped):.0f}/s for the slowest "
        "configuration above.",
    ]
    (RESULTS / "state.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
