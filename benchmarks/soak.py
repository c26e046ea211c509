"""Soak: many small blocks streamed through ``contimg watch`` on a real ``dask scheduler`` and
``dask worker`` processes; the resident memory of every process and the scheduler's task
count sampled as each block finishes.

    python -m benchmarks.soak [--blocks 100] [--staged 4]

``--staged`` small blocks are simulated once and fed again and again under later names
(``testing.streaming.Feeder(cycles=...)``), back to back. The recipe is ingest -> flag ->
export (a Measurement Set through its writer child process): no calibration, since the
repeated contents keep their own observation times. Memory is judged after a warm-up (the
first fifth of the blocks): flat means the last fifth's mean within 10 % of the warm-up
fifth's (the second). Results land in ``benchmarks/results/soak_small.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path

from benchmarks.run import RESULTS
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.state import open_state_store
from contimg_dask.testing.cluster import dask_command, free_port
from contimg_dask.testing.streaming import Feeder, start_watch, stop_watch
from tests.helpers import make_config

RECIPE = "[{stage: ingest}, {stage: flag}, {stage: export}]"
LAST_STAGE = "export"


def _rss_mb(pid: int) -> dict[str, float]:
    """Resident memory (MB) of ``pid`` (key ``main``) and of each of its descendants (key
    ``name:pid``)."""
    import psutil

    out = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        out["main"] = root.memory_info().rss / 2**20
        for proc in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                out[f"{proc.name()}:{proc.pid}"] = proc.memory_info().rss / 2**20
    return out


def _flatness(series: list[float], n: int) -> float | None:
    """Mean of the last fifth over the mean of the second fifth, minus 1."""
    fifth = max(n // 5, 1)
    warm, last = series[fifth:2 * fifth], series[-fifth:]
    if not warm or not last:
        return None
    return (sum(last) / len(last)) / (sum(warm) / len(warm)) - 1


def soak(work: Path, n_blocks: int, n_staged: int) -> dict:
    from distributed import Client

    staging = work / "staging"
    simulate_blocks(make_config(work / "sim"), staging,
                    SimulationOptions(preset="small", n_blocks=n_staged, seed=5))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = dask_command(["scheduler", "--host", "127.0.0.1", "--port", str(port),
                        "--no-dashboard"], work / "scheduler.log")
    workers = dask_command(["worker", address, "--nworkers", "2", "--nthreads", "1",
                      "--memory-limit", "2GiB", "--no-dashboard", "--host", "127.0.0.1"],
                     work / "workers.log")
    client = Client(address, timeout=60)
    client.wait_for_workers(2, timeout=120)
    incoming, root = work / "incoming", work / "root"
    incoming.mkdir()
    overrides = {"dask.scheduler_address": address, "logging.level": "INFO",
                 "pipeline.recipes": f"{{calibrator: {RECIPE}, target: {RECIPE}}}"}
    watch = start_watch(incoming, root, overrides, work / "watch.log")
    state = open_state_store(make_config(root))
    feeder = Feeder(staging, incoming, block_interval_s=0.0,
                    cycles=-(-n_blocks // n_staged)).start()
    samples: list[dict] = []
    done: set[str] = set()
    t0 = time.monotonic()
    try:
        while len(done) < n_blocks:
            if watch.poll() is not None:
                raise RuntimeError((work / "watch.log").read_text()[-2000:])
            finished = {s.block_id for s in state.stages(status="done")
                        if s.stage == LAST_STAGE}
            if len(finished) > len(done):
                done = finished
                samples.append({
                    "blocks_done": len(done), "seconds": time.monotonic() - t0,
                    "watch_mb": _rss_mb(watch.pid), "workers_mb": _rss_mb(workers.pid),
                    "scheduler_mb": _rss_mb(scheduler.pid),
                    "scheduler_tasks": client.run_on_scheduler(
                        lambda dask_scheduler: len(dask_scheduler.tasks))})
            if state.stages(status="failed"):
                raise RuntimeError(f"failed: {state.stages(status='failed')[0].to_dict()}")
            time.sleep(1.0)
    finally:
        stop_watch(watch, signal.SIGTERM)
        feeder.join(timeout=5)
        client.close()
        for proc in (workers, scheduler):
            stop_watch(proc, signal.SIGTERM)
        state.close()
    return {"blocks": n_blocks, "samples": samples}


def _series(samples: list[dict]) -> dict[str, list[float]]:
    """RSS over the samples per process: the watch process, its children together (the MS
    writer comes and goes), the scheduler, and each process of ``dask worker`` (nannies
    and workers, by pid: they live as long as the run)."""
    out: dict[str, list[float]] = {}
    for sample in samples:
        watch = dict(sample["watch_mb"])
        main = watch.pop("main", float("nan"))
        out.setdefault("contimg watch", []).append(main)
        out.setdefault("contimg watch children (sum)", []).append(sum(watch.values()))
        out.setdefault("dask scheduler", []).append(sample["scheduler_mb"].get("main", 0.0))
        for name, value in sample["workers_mb"].items():
            out.setdefault(f"dask worker {name}", []).append(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--staged", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="contimg-soak-"))
    try:
        result = soak(work, args.blocks, args.staged)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    samples = result["samples"]
    rows = []
    for name, series in _series(samples).items():
        rows.append((name, series[0], max(series), series[-1],
                     _flatness(series, len(series))))
    tasks = [s["scheduler_tasks"] for s in samples]
    result["rows"] = rows
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak_small.json").write_text(json.dumps(result, indent=2))
    span = samples[-1]["seconds"] if samples else float("nan")
    lines = [f"# Soak: {args.blocks} small blocks through `contimg watch`", "",
             f"Recipe ingest -> flag -> export; a `dask scheduler` and `dask worker "
             f"--nworkers 2 --nthreads 1`; {span:.0f} s in all "
             f"({args.blocks / span * 3600:.0f} blocks/h).", "",
             "| process | RSS first (MB) | max | last | last fifth / second fifth - 1 |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {a:.0f} | {m:.0f} | {z:.0f} | "
              f"{'-' if g is None else f'{100 * g:+.1f} %'} |" for n, a, m, z, g in rows]
    lines += ["", f"Scheduler tasks held when a block finished: first {tasks[:5]}, last "
              f"{tasks[-5:]}, max {max(tasks) if tasks else '-'}."]
    (RESULTS / "soak_small.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
