"""The scaling model as a simulation: a real ``distributed`` scheduler with N in-process
workers runs, for many blocks, the pipeline's recipe as sleeping tasks of the measured
per-stage durations, with the shared resources the sleeping tasks do not have.

    python -m benchmarks.scaling_model [--workers 1 2 4 8 16 32 64] [--time-factor 0.05]
        [--blocks-per-worker 8] [--duration-cv 0.15] [--calibrator-fraction F] [--lockstep]

What is simulated (one run per worker count N, all durations multiplied by the time factor
``f`` so that 64 workers and a few hundred blocks finish in a minute or two; rates are
given back in real time, blocks / (makespan / f)):

- **Workers**: N ``distributed`` workers in one process (``LocalCluster(processes=False)``),
  each with ``threads_per_worker`` threads (2: a worker is the 2-core machine the stage
  figures were measured on) and ``CASA=1``: the image stage's one task asks for it, so at
  most one imaging engine runs per worker, as in production.
- **Pipeline processes**: N drivers (one ``contimg watch`` per worker, as cluster/README.md
  advises), each taking the next block and running its recipe stage after stage, as
  ``Pipeline.work`` does: per stage the state store's calls, the stage's tasks on the
  cluster (a Dask stage: ``tasks`` tasks of ``wall_s x threads / tasks`` each, so one worker
  takes the measured wall time), then the pipeline process's own work between stages.
- **The scheduler** is real: its per-task work happens; its event loop's CPU seconds are
  reported (an upper bound: the in-process workers' messages share that loop, and with
  ``f`` < 1 the tasks per second it handles are 1/f times the real ones).
- **Redis** (the state store) is one FIFO server: each stage's calls (claim, heartbeat,
  complete, events, monitor points) take the service time measured on this machine
  against a real ``redis-server`` with ``appendfsync always`` (:func:`measure_redis`:
  1 / the rate of 8 concurrent clients), and a pipeline sees at least the latency one
  client measured.
- **The shared file system** is one FIFO server of ``fs_bytes_per_s`` (an assumption: see
  ``SHARED_FS_BYTES_PER_S``): each stage's reads and writes of the shared file system
  (``io_bytes``) queue on it after the stage's compute (additive: overlap of compute and
  I/O is not modelled, which is pessimistic).
- **The mosaic lock**: blocks of one mosaic period (~11.65 blocks, hourly) add to one
  mosaic under a file lock: one FIFO server per period.
- **Blocks differ**: each stage's compute seconds per block are drawn lognormal with mean
  the measured figure and coefficient of variation ``DURATION_CV`` (seeded), so drivers
  drift apart after the first round as in a long campaign (``--lockstep``: all equal).
- **Calibrators**: a fraction of the blocks (``CALIBRATOR_TRANSITS_PER_DAY`` of a day's
  ~280) run calibrate_solve; a target waits before calibrate_apply while a calibrator
  known to the pipeline has its solve to do or an earlier block its ingest, as the
  orchestrator does (one declination strip; a waiting driver idles its worker).
- **Steady state**: besides blocks / makespan, the rate between the end of the first
  round and the start of the drain (:func:`benchmarks.scaling_sim.steady_state`), with
  each resource's busy fraction in that window.

Results: ``benchmarks/results/scaling_model.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from filelock import FileLock

from benchmarks.run import RESULTS
from benchmarks.scaling_sim import (
    SHARED_FS_BYTES_PER_S,
    ModelInputs,
    RunResult,
    StageCost,
    drawn_block_seconds,
    simulate,
)

RESULTS_JSON = RESULTS / "scaling_model.json"
#: The telescope's cadence: one block per 309 s; 30 days of blocks.
TELESCOPE_BLOCKS_PER_HOUR = 3600 / 309
THIRTY_DAYS_BLOCKS = 30 * 24 * TELESCOPE_BLOCKS_PER_HOUR
BLOCKS_PER_DAY = 24 * TELESCOPE_BLOCKS_PER_HOUR
GB = 1e9
#: The full-block recipe with the shipped engine (tclean), calibrator and target blocks in
#: one table (calibrate_solve on calibrators only; a target's calibrate_apply waits for the
#: strip's solve). Idle-machine figures: wall seconds on 2 cores where measured so, CPU
#: seconds of a single-threaded engine.
FULL_TCLEAN = (
    StageCost("ingest", 4.70, "data_path_full.md: ingest + rephase 4.70 s", io_bytes=2.8 * GB),
    StageCost("flag", 5.9, "flagging_full.md: ours, 5.9 s wall (11.0 CPU s) on 2 processes",
              io_bytes=1.6 * GB),
    StageCost("calibrate_solve", 7.98, "calibration_full.md: solve 7.98 s; reads 1.37 GB "
              "visibilities + weights and flags (2.2 GB); calibrator blocks only",
              io_bytes=2.2 * GB, calibrator_only=True),
    StageCost("calibrate_apply", 1.21, "calibration_full.md: apply on the fly 1.21 s; a "
              "target waits for the strip's solve first", waits_for_solve=True),
    StageCost("image", 651.0, "imaging_bda.md: tclean with BDA 651 CPU s (one thread), "
              "1800 px x 8\"; shared-FS volume of the no-BDA MS kept", tasks=1,
              io_bytes=4.3 * GB, casa=True),
    StageCost("mosaic", 12.6, "mosaic_incremental.md: 138.8 s compute wall / 11 adds "
              "(2.2 CPU s per add; loaded machine)", tasks=1, io_bytes=0.34 * GB,
              lock="mosaic"),
    StageCost("photometry", 1.64, "photometry.md: 10000 positions on 4096^2 1.64 s",
              io_bytes=0.1 * GB),
)
#: The same with WSClean as the engine (imaging_bda.md: 239 CPU s with baseline-dependent
#: averaging, the default).
FULL_WSCLEAN = tuple(
    dataclasses.replace(s, wall_s=239.0, source="imaging_bda.md: WSClean with BDA 239 CPU s "
                        "(one thread), 1800 px x 8\"; shared-FS volume of the no-BDA MS kept")
    if s.name == "image" else s for s in FULL_TCLEAN)
#: WSClean with the mosaic add at its CPU seconds (2.2 s, mosaic_incremental.md) rather than
#: the loaded machine's wall seconds: how much of the loss the mosaic lock makes.
FULL_WSCLEAN_MOSAIC_CPU = tuple(
    dataclasses.replace(s, wall_s=2.2, source="mosaic_incremental.md: 2.2 CPU s per add")
    if s.name == "mosaic" else s for s in FULL_WSCLEAN)
#: Run-to-run coefficient of variation of a stage's seconds, applied to every stage of every
#: block: stage_layer_check_full.md's 9 repeats of the corrected-data reads on one block
#: (CPU s: CV 0.135 before and after the change; wall s 0.18-0.21 at load ~4) and its stated
#: +-15 % spread between runs. It is the machine's noise on one block, a floor for how much
#: real blocks differ (flag fractions, sources to CLEAN), not a measure of that.
DURATION_CV = 0.15
#: Calibrator transits per day at a declination with any (contimg_dask/science/data/
#: calibrators.csv, Perley-Butler 2017: 7 sources; usable as config/pipeline.yaml's
#: calibration section says: within 5 deg of the pointing, >= 1 Jy beam-weighted at
#: 1.405 GHz, Airy beam of the 4.65 m dishes): 1.62 per day averaged over the pointing
#: declinations -30..+90 deg that have one (17 % of them; 0.28 per day over all, at most 4).
CALIBRATOR_TRANSITS_PER_DAY = 1.62
#: The measured small-block run's recipe (benchmarks/scaling.py: ingest -> flag -> export,
#: a 1-thread worker), for the check against it; its volumes are measured too.
SMALL_SOURCE = "benchmarks/scaling.py's 1-worker run: mean stage seconds"


def small_stages(measured: dict) -> tuple[StageCost, ...]:
    """The small-block stages of benchmarks/scaling.py's 1-worker run (its JSON row)."""
    per_stage_bytes = measured["bytes_written_per_block"] / len(measured["stage_seconds"])
    return tuple(StageCost(name, seconds, SMALL_SOURCE, io_bytes=per_stage_bytes)
                 for name, seconds in measured["stage_seconds"].items())


def small_overhead_s(measured: dict) -> float:
    """The pipeline process's own seconds per stage in the 1-worker run: wall per block
    less the stages' seconds, over the stages (state reads, polls, provenance)."""
    per_block = measured["wall_s"] * measured["workers"] / measured["blocks"]
    stages = measured["stage_seconds"]
    return max(0.0, (per_block - sum(stages.values())) / len(stages))




def measure_redis(n_clients: int = 8, per_client: int = 100) -> dict[str, float]:
    """The state store's calls of one stage as the orchestrator issues them (claim,
    heartbeat, complete, 3 events, one call of 6 monitor points), on the real
    ``RedisStateStore`` against a real ``redis-server`` (``appendfsync always``, our
    redis.conf) on 127.0.0.1: seconds per stage for one client (latency) and at the rate of
    ``n_clients`` concurrent clients (service time = 1 / rate), and Redis commands per
    stage (``INFO stats``)."""
    import redis as redis_py

    from contimg_dask.stages.contract import Product, Provenance, StageResult
    from contimg_dask.state import MetricSample, open_state_store
    from tests.helpers import make_config
    from tests.state.redis_process import RedisProcess

    work = Path(tempfile.mkdtemp(prefix="contimg-scaling-model-"))
    server = RedisProcess(work / "redis", make_config(work / "settings").state.redis).start()
    overrides = {"state.backend": "redis", "state.url": server.url,
                 "state.instance": "model"}
    provenance = Provenance(inputs=("in",), config_hash="h", versions={})

    def stage_calls(store, worker: str, block: str) -> None:
        store.enqueue(block, "flag")
        lease = store.claim(worker, 600, ["flag"])
        lease = store.heartbeat(lease, 600)
        store.complete(lease, StageResult("flag", block, (Product("ms", Path("/p/x")),),
                                          provenance, {"seconds": 1.0}))
        for kind in ("stage_done", "product", "block_sealed"):
            store.emit(kind, {"block_id": block, "stage": "flag"})
        store.record_metrics([MetricSample(f"m{j}", 1.0, time.time(), block)
                              for j in range(6)])

    def client_run(index: int, count: int) -> None:
        store = open_state_store(make_config(work / "root", **overrides))
        try:
            for i in range(count):
                stage_calls(store, f"w{index}", f"b{index}-{i}")
        finally:
            store.close()

    try:
        info = redis_py.Redis.from_url(server.url)
        commands0 = info.info("stats")["total_commands_processed"]
        t0 = time.perf_counter()
        client_run(-1, per_client)
        latency = (time.perf_counter() - t0) / per_client
        commands = (info.info("stats")["total_commands_processed"] - commands0) / per_client
        t0 = time.perf_counter()
        with ThreadPoolExecutor(n_clients) as pool:
            list(pool.map(client_run, range(n_clients), [per_client] * n_clients))
        rate = n_clients * per_client / (time.perf_counter() - t0)
        info.close()
    finally:
        server.stop()
    return {"stage_latency_s": latency, "stage_service_s": 1 / rate, "stages_per_s": rate,
            "commands_per_stage": commands, "clients": n_clients,
            "load_average": os.getloadavg()[0]}


def sweep(inputs: ModelInputs, sizes: list[int], blocks_per_worker: int, time_factor: float,
          progress: Callable[[list[RunResult]], None] = lambda rows: None
          ) -> list[RunResult]:
    """:func:`simulate` at each worker count, ``blocks_per_worker`` blocks per worker;
    ``progress`` gets the rows so far after each."""
    rows: list[RunResult] = []
    for n in sizes:
        rows.append(simulate(inputs, n, blocks_per_worker * n, time_factor))
        progress(rows)
    return rows


#: The simulated configurations, in the order of the results page.
CONFIGS = ("check", "tclean", "wsclean", "wsclean_mosaic_cpu")


def model_inputs(stages: tuple[StageCost, ...], redis: dict[str, float], *,
                 overhead_s: float, threads: int, fs_bytes_per_s: float,
                 duration_cv: float = 0.0, calibrator_fraction: float = 0.0,
                 seed: int = 0) -> ModelInputs:
    """The simulation's inputs from a stage table and :func:`measure_redis`'s figures."""
    return ModelInputs(stages=stages, redis_stage_service_s=redis["stage_service_s"],
                       redis_stage_latency_s=redis["stage_latency_s"],
                       pipeline_overhead_s=overhead_s, fs_bytes_per_s=fs_bytes_per_s,
                       threads_per_worker=threads, duration_cv=duration_cv, seed=seed,
                       calibrator_fraction=calibrator_fraction)


def summary(rows: list[RunResult]) -> dict[str, object]:
    """Efficiency vs linear per worker count (over the whole run, and over its steady part
    where it has one), the resource each saturates first (in the steady part where there is
    one), and how many workers keep up with the telescope and reprocess 30 days in one day
    (by the steady rate where there is one; None: more than the largest count simulated)."""
    base = rows[0].blocks_per_hour / rows[0].workers
    steady_base = (rows[0].steady_blocks_per_hour or 0.0) / rows[0].workers
    table = []
    for row in rows:
        util = dict(row.steady_utilisation or row.utilisation)
        busiest = max(util, key=util.get)
        steady = row.steady_blocks_per_hour
        table.append({"workers": row.workers, "blocks_per_hour": row.blocks_per_hour,
                      "vs_linear": row.blocks_per_hour / (base * row.workers),
                      "steady_blocks_per_hour": steady,
                      "steady_vs_linear": steady / (steady_base * row.workers)
                      if steady and steady_base else None,
                      "steady_window_s": row.steady_window_s,
                      "utilisation_over": "steady" if row.steady_utilisation else "makespan",
                      "busiest": busiest, **{f"util_{k}": v for k, v in util.items()},
                      "makespan_utilisation": row.utilisation,
                      "scheduler_cpu_s": row.scheduler_cpu_s, "tasks": row.tasks,
                      "scheduler_cpu_ms_per_task": 1e3 * row.scheduler_cpu_s / max(row.tasks, 1),
                      "blocks": row.blocks, "calibrator_blocks": row.calibrator_blocks,
                      "mean_solve_wait_s": row.mean_solve_wait_s,
                      "makespan_s": row.makespan_s, "process_cpu_s": row.process_cpu_s,
                      "stage_seconds": row.stage_seconds})

    def first(rate: float) -> int | None:
        return next((r.workers for r in rows
                     if (r.steady_blocks_per_hour or r.blocks_per_hour) >= rate), None)

    return {"rows": table, "keeps_up_workers": first(TELESCOPE_BLOCKS_PER_HOUR),
            "thirty_days_in_a_day_workers": first(THIRTY_DAYS_BLOCKS / 24)}


def correct_for_draws(section: dict, inputs: ModelInputs) -> None:
    """Put the rows' 'vs linear' on the same blocks: each run draws its own stage seconds
    (8 blocks at 1 worker, 512 at 64), and a few blocks' mean differs from the table's by
    several per cent (seed 0, 1 worker: image x 1.06). ``vs_linear`` and
    ``steady_vs_linear`` become rate x drawn seconds per block / (n x the 1-worker row's
    same product) (:func:`drawn_block_seconds` over all the run's blocks); the uncorrected
    ratios stay as ``*_raw``. No change where nothing is drawn (CV 0)."""
    rows = section["rows"]
    for row in rows:
        row["drawn_block_s"] = drawn_block_seconds(inputs, row["blocks"])
    base = rows[0]
    for key, rate in (("vs_linear", "blocks_per_hour"),
                      ("steady_vs_linear", "steady_blocks_per_hour")):
        for row in rows:
            row.setdefault(f"{key}_raw", row.get(key))
            if row.get(rate) and base.get(rate):
                row[key] = (row[rate] * row["drawn_block_s"] / (
                    row["workers"] / base["workers"] * base[rate] * base["drawn_block_s"]))


def _optional(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table_lines(title: str, inputs: ModelInputs, result: dict) -> list[str]:
    """A markdown section for one simulated configuration."""
    lines = ["", f"## {title}", "",
             f"Stage seconds drawn per block with CV {inputs.duration_cv} (seed "
             f"{inputs.seed}); calibrator blocks: {inputs.calibrator_fraction:.4f} of them.",
             "", "| stage | seconds per block on one worker | tasks | shared FS GB | source |",
             "| --- | ---: | ---: | ---: | --- |"]
    lines += [f"| {s.name} | {s.wall_s:.2f} | {s.tasks}{' (CASA=1)' if s.casa else ''} | "
              f"{s.io_bytes / GB:.2f} | {s.source} |" for s in inputs.stages]
    lines += ["", "| workers | blocks (calibrators) | blocks/h, makespan | vs linear | "
              "blocks/h, steady | vs linear | busiest resource | CASA slots | Redis | "
              "shared FS | busiest mosaic lock | scheduler loop CPU (sim) | scheduler ms CPU "
              "per task | target's wait for the solve, s | s per block in each stage "
              "(submitted to done) |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | "
              "---: | ---: | ---: | --- |"]
    for r in result["rows"]:
        lines.append(
            f"| {r['workers']} | {r['blocks']} ({r.get('calibrator_blocks', 0)}) | "
            f"{r['blocks_per_hour']:.1f} | {r['vs_linear']:.2f} | "
            f"{_optional(r.get('steady_blocks_per_hour'), '.1f')} | "
            f"{_optional(r.get('steady_vs_linear'), '.2f')} | {r['busiest']} | "
            f"{r['util_casa_slots']:.0%} | {r['util_redis']:.1%} | "
            f"{r['util_shared_fs']:.0%} | {r['util_busiest_mosaic_lock']:.0%} | "
            f"{r['util_scheduler_loop_cpu']:.0%} | {r['scheduler_cpu_ms_per_task']:.2f} | "
            f"{r.get('mean_solve_wait_s', 0.0):.1f} | "
            f"{', '.join(f'{k} {v:.1f}' for k, v in r.get('stage_seconds', {}).items())} |")
    keeps, month = result["keeps_up_workers"], result["thirty_days_in_a_day_workers"]
    largest = result["rows"][-1]["workers"]
    lines += ["", f"- keeps up with the telescope ({TELESCOPE_BLOCKS_PER_HOUR:.2f} blocks/h): "
              f"{keeps if keeps else f'more than {largest}'} workers",
              f"- 30 days ({THIRTY_DAYS_BLOCKS:.0f} blocks) in one day "
              f"({THIRTY_DAYS_BLOCKS / 24:.0f} blocks/h): "
              f"{month if month else f'more than {largest}'} workers"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--blocks-per-worker", type=int, default=8)
    parser.add_argument("--time-factor", type=float, default=0.05)
    parser.add_argument("--duration-cv", type=float, default=DURATION_CV)
    parser.add_argument("--calibrator-fraction", type=float,
                        default=CALIBRATOR_TRANSITS_PER_DAY / BLOCKS_PER_DAY)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lockstep", action="store_true",
                        help="the worst case: every block the same, no calibrators, 2 blocks "
                             "per worker (sections tagged _lockstep unless --tag)")
    parser.add_argument("--measured", default="scaling_small.json",
                        help="benchmarks/scaling.py's results (under benchmarks/results) that "
                             "the check runs against")
    parser.add_argument("--tag", default="",
                        help="a suffix for the results' section names (a variant run kept "
                             "beside the default one), e.g. _f0.15")
    parser.add_argument("--fs-bytes-per-s", type=float, default=SHARED_FS_BYTES_PER_S)
    parser.add_argument("--only", nargs="+", default=list(CONFIGS),
                        choices=list(CONFIGS))
    args = parser.parse_args()
    if args.lockstep:
        args.duration_cv, args.calibrator_fraction, args.blocks_per_worker = 0.0, 0.0, 2
        args.tag = args.tag or "_lockstep"
    redis = measure_redis()
    print("redis:", redis, flush=True)
    measured = json.loads((RESULTS / args.measured).read_text())["runs"]
    configs = {
        "check": (f"Check: the runs of {args.measured} (benchmarks/scaling.py, 1-thread workers)",
                  small_stages(measured[0]), small_overhead_s(measured[0]), 1,
                  [r["workers"] for r in measured], 4, 1.0),
        "tclean": ("Full blocks, tclean (the shipped engine)", FULL_TCLEAN, None, 2,
                   args.workers, args.blocks_per_worker, args.time_factor),
        "wsclean": ("Full blocks, WSClean", FULL_WSCLEAN, None, 2, args.workers,
                    args.blocks_per_worker, args.time_factor),
        "wsclean_mosaic_cpu": ("Full blocks, WSClean, mosaic add at its CPU seconds",
                               FULL_WSCLEAN_MOSAIC_CPU, None, 2, args.workers,
                               args.blocks_per_worker, args.time_factor),
    }
    overhead_full = small_overhead_s(measured[0])
    for config_name in args.only:
        title, stages, overhead, threads, sizes, per_worker, factor = configs[config_name]
        name, title = config_name + args.tag, title + args.tag.replace("_", " ")
        full = config_name != "check"
        inputs = model_inputs(stages, redis, overhead_s=overhead_full if overhead is None
                              else overhead, threads=threads,
                              fs_bytes_per_s=args.fs_bytes_per_s,
                              duration_cv=args.duration_cv if full else 0.0,
                              calibrator_fraction=args.calibrator_fraction if full else 0.0,
                              seed=args.seed)

        def record(rows: list[RunResult], name: str = name, title: str = title,
                   inputs: ModelInputs = inputs, factor: float = factor) -> None:
            print(name, rows[-1].workers, f"{rows[-1].blocks_per_hour:.1f}/h",
                  f"steady {rows[-1].steady_blocks_per_hour}",
                  rows[-1].steady_utilisation or rows[-1].utilisation, flush=True)
            section = {"title": title, "inputs": dataclasses.asdict(inputs),
                       "time_factor": factor, "load_average": os.getloadavg()[0],
                       **summary(rows)}
            correct_for_draws(section, inputs)
            if name == "check":
                section["measured_blocks_per_hour"] = {
                    r["workers"]: r["blocks_per_hour"] for r in measured}
                section["measured_cpu_s_per_block"] = {
                    r["workers"]: r["cpu_s"] / r["blocks"] for r in measured}
            update_results({"redis": redis, "fs_bytes_per_s": args.fs_bytes_per_s,
                            name: section})

        sweep(inputs, sizes, per_worker, factor, record)
    write_markdown(json.loads(RESULTS_JSON.read_text()))


def update_results(sections: dict) -> None:
    """Merge ``sections`` into benchmarks/results/scaling_model.json under a file lock (runs
    of different configurations may go side by side) and write it atomically."""
    with FileLock(Path(tempfile.gettempdir()) / "contimg-scaling-model.json.lock"):
        result = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
        result.update(sections)
        tmp = RESULTS_JSON.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, RESULTS_JSON)


def write_markdown(result: dict) -> None:
    """benchmarks/results/scaling_model.md from the JSON."""
    redis = result["redis"]
    lines = ["# Scaling model: a simulated cluster (benchmarks/scaling_model.py)", "",
             f"Redis on this machine (real redis-server, appendfsync always, the real "
             f"RedisStateStore): one stage's calls {redis['commands_per_stage']:.0f} "
             f"commands, {1e3 * redis['stage_latency_s']:.2f} ms for one client, "
             f"{redis['stages_per_s']:.0f} stages/s with {redis['clients']} clients "
             f"(service time {1e3 * redis['stage_service_s']:.2f} ms); load average "
             f"{redis['load_average']:.1f}. Shared file system: "
             f"{result['fs_bytes_per_s'] / GB:.1f} GB/s assumed (one NFS server on 10 GbE).",
             "",
             "How to read it: blocks/h are real-time rates (simulated seconds / time "
             "factor), two of them per row. 'makespan': all blocks over the whole run, "
             "start-up (every driver starts at once) and drain (the last blocks finishing "
             "while other workers idle) included. 'steady': the blocks completed between the "
             "end of the first round (the n-th block done, n workers) and the start of the "
             "drain (the last block taken), over that window: the rate of a long campaign. "
             "The resource columns are busy fractions over the steady window where the row "
             "has one, else over the run: CASA slots (the imaging engines' share of the "
             "workers' one slot each), Redis (its FIFO server), the shared file system, the "
             "busiest mosaic period's lock (over the whole window, so an hour's lock busy "
             "only while its blocks pass looks idle: the mosaic stage's seconds show its "
             "queue), and the scheduler's event loop CPU in the simulation. The last is "
             "pessimistic by 1 / time factor (the simulation hands the scheduler that many "
             "times the real task rate) and includes the in-process "
             "workers' messages; 'scheduler ms CPU per task' is the figure to scale by the "
             "real task rate. 'vs linear' "
             "is corrected for each run's own draws (the 1-worker run's 8 blocks drew a "
             "6 % longer image than the table's mean): rate x mean drawn seconds per "
             "block, against n x the 1-worker row's; the JSON keeps the raw ratios as "
             "*_raw. The default runs draw every stage's seconds per block "
             "(lognormal, mean the table's figure, the stated CV, seeded), put "
             "calibrate_solve on the calibrator blocks (spread evenly, block 0 first) and "
             "make targets wait before calibrate_apply for solves in flight as the "
             "orchestrator does (a waiting driver leaves its worker idle: pessimistic, the "
             "real pipeline process claims other work meanwhile). Sections marked "
             "'lockstep' are the worst case kept for comparison: every block the same, no "
             "calibrators, 2 blocks per worker, so blocks of one mosaic period reach its "
             "lock together and the start-up transient is most of the run. A section with "
             "one row (a variant run, --tag) has no 1-worker row: its 'vs linear' is 1 by "
             "construction. What the figures mean for sizing: cluster/README.md, section 4."]
    sections = [v for v in result.values() if isinstance(v, dict) and "rows" in v]
    sections.sort(key=lambda v: "lockstep" in v["title"])
    for section in sections:
        inputs = ModelInputs(**{**section["inputs"], "stages": tuple(
            StageCost(**s) for s in section["inputs"]["stages"])})
        correct_for_draws(section, inputs)
        lines += table_lines(f"{section['title']} (time factor {section['time_factor']}, "
                             f"load average {section['load_average']:.1f})", inputs, section)
        if "measured_blocks_per_hour" in section:
            lines += ["- measured by benchmarks/scaling.py: " + ", ".join(
                f"{w} worker(s) {v:.0f} blocks/h"
                for w, v in section["measured_blocks_per_hour"].items())]
            cpu = section["measured_cpu_s_per_block"]
            lines += [
                "- the measured runs share the VM's 2 cores (workers, pipelines, scheduler, "
                "Redis): at " + ", ".join(
                    f"{w} worker(s) {c:.1f} CPU s per block, at most "
                    f"{2 * 3600 / c:.0f} blocks/h" for w, c in cpu.items())
                + "; the simulation gives each worker its own cores, so past one worker it "
                "is the cluster's rate, not this VM's. Its 1-worker rate is below the "
                "measured one: the simulation's own per-task cost on this loaded VM comes "
                "on top of stage times that hold Dask's already (25 tasks of 20-60 ms per "
                "stage here; full-block tasks are longer and the 1-worker full-block rate "
                "matches the stage sum). Above linear at 2 workers: a 1-thread worker idles "
                "while its pipeline works between stages, and the other pipeline's tasks "
                "use it."]
    (RESULTS / "scaling_model.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
