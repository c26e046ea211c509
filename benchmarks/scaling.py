"""Scaling: blocks per hour with 1 and 2 Dask workers on this machine, in the same run.

    python -m benchmarks.scaling [--blocks 4] [--preset small] [--workers 1 2]

Each configuration: a real ``dask scheduler``, N ``dask worker --nthreads 1 --resources
CASA=1`` processes, a ``redis-server`` (``appendfsync always``, as shipped) and N
``contimg run`` processes on the same directory of simulated blocks and the same Redis
instance (the leases share the work: one pipeline process per worker, as cluster/README.md
advises). The recipe is ingest -> flag -> export. Blocks/hour is the number of blocks over
the wall time from the first process started to the last one finished; CPU seconds and the
largest peak RSS are those of every process started (``getrusage`` of the children).

The model past this machine is the simulation of benchmarks/scaling_model.py, fed with these
runs' figures (and checked against them). Results:
``benchmarks/results/scaling_<preset>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.run import RESULTS
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.state import open_state_store
from contimg_dask.testing.cluster import DaskProcesses, rss_mb
from tests.helpers import make_config
from tests.state.redis_process import RedisProcess

RECIPE = "[{stage: ingest}, {stage: flag}, {stage: export}]"
STAGES = ("ingest", "flag", "export")
#: A task's scheduler transitions (released, waiting, processing, memory, released,
#: forgotten): the scheduler's transition counter over this is the number of tasks.
TRANSITIONS_PER_TASK = 5


def _transitions(dask_scheduler) -> int:
    return dask_scheduler.transition_counter


def _children_usage() -> tuple[float, float]:
    """CPU seconds (user + system) and the largest peak RSS (MiB) of the waited-for
    children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


class StageMemory(threading.Thread):
    """Samples, every 0.2 s, the resident memory of the pipeline processes and the Dask
    workers together (with their children: the MS writer, CASA) and which stages are
    running; ``peaks`` maps each stage to the largest total seen while it ran (MiB; with
    several stages running at once each is charged the total)."""

    def __init__(self, runs: list[subprocess.Popen], dask: DaskProcesses,
                 state_overrides: dict[str, object], root: Path) -> None:
        super().__init__(name="stage-memory", daemon=True)
        self.pids = [run.pid for run in runs] + [w.pid for w in dask.workers.values()]
        self.config = make_config(root, **state_overrides)
        self.peaks: dict[str, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        state = open_state_store(self.config)
        try:
            while not self._stop_event.wait(0.2):
                total = sum(rss_mb(pid) for pid in self.pids)
                for status in state.stages(status="running"):
                    self.peaks[status.stage] = max(self.peaks.get(status.stage, 0.0), total)
        finally:
            state.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def run_configuration(work: Path, staged: Path, n_workers: int, n_blocks: int) -> dict:
    """One cluster of ``n_workers`` with as many ``contimg run`` processes; its measures."""
    cpu0, _ = _children_usage()
    redis = RedisProcess(work / "redis", make_config(work / "redis-settings").state.redis)
    redis.start()
    dask = DaskProcesses(work / "dask", n_workers, nthreads=1, memory_limit="2GiB",
                         resources="CASA=1").start()
    root = work / "root"
    overrides = {"paths.root": str(root), "dask.scheduler_address": dask.address,
                 "state.backend": "redis", "state.url": redis.url,
                 "state.instance": f"scaling{n_workers}",
                 "pipeline.recipes": f"{{calibrator: {RECIPE}, target: {RECIPE}}}"}
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    try:
        from distributed import Client

        with Client(dask.address, timeout=60) as client:
            dask.wait(client)
            transitions0 = client.run_on_scheduler(_transitions)
            started = time.monotonic()
            runs = [subprocess.Popen(
                [sys.executable, "-m", "contimg_dask.cli.main", "--env", "testing", *sets,
                 "run", str(staged), "--json"], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True) for _ in range(n_workers)]
            sampler = StageMemory(runs, dask, {k: v for k, v in overrides.items()
                                               if k.startswith("state.")}, root)
            sampler.start()
            outputs = [run.communicate(timeout=3600)[0] for run in runs]
            wall = time.monotonic() - started
            sampler.stop()
            tasks = (client.run_on_scheduler(_transitions) - transitions0) / TRANSITIONS_PER_TASK
        if any(run.returncode for run in runs):
            raise RuntimeError("contimg run failed:\n" + "\n".join(outputs)[-4000:])
        state = open_state_store(make_config(root, **{
            k: v for k, v in overrides.items() if k.startswith("state.")}))
        try:
            done = state.stages(status="done")
            seconds = {stage: [s.result["seconds"] for s in done if s.stage == stage]
                       for stage in STAGES}
            workers = sorted({s.worker for s in done})
        finally:
            state.close()
    finally:
        dask.stop()
        redis.stop()
    cpu1, peak = _children_usage()
    written = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {"workers": n_workers, "pipelines": n_workers, "blocks": n_blocks,
            "wall_s": wall, "blocks_per_hour": n_blocks / wall * 3600,
            "cpu_s": cpu1 - cpu0, "largest_peak_rss_mib": peak,
            "stage_seconds": {k: sum(v) / len(v) for k, v in seconds.items() if v},
            "stage_peak_rss_mib": sampler.peaks,
            "bytes_written_per_block": written / n_blocks,
            "scheduler_tasks_per_block": tasks / n_blocks,
            "pipeline_processes_that_ran_stages": len(workers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    out = RESULTS / f"scaling_{args.preset}.json"
    result = {"preset": args.preset, "runs": measure(args.preset, args.blocks, args.workers),
              "load_average": os.getloadavg()}
    runs = result["runs"]
    RESULTS.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    base = runs[0]["blocks_per_hour"] / runs[0]["workers"]
    lines = [f"# Scaling: {runs[0]['blocks']} {args.preset} blocks, ingest -> flag -> export",
             "", f"Load average at the end {result['load_average'][0]:.1f} (2-core VM).", "",
             "| workers (= pipeline processes) | blocks/h | vs linear | CPU s | largest "
             "peak RSS of one process (MiB) | mean s per stage | peak RSS of all processes "
             "while the stage ran (MiB) |", "| ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for run in runs:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in run["stage_seconds"].items())
        memory = ", ".join(f"{k} {v:.0f}" for k, v in run["stage_peak_rss_mib"].items())
        lines.append(f"| {run['workers']} | {run['blocks_per_hour']:.0f} | "
                     f"{run['blocks_per_hour'] / (base * run['workers']):.2f} | "
                     f"{run['cpu_s']:.0f} | {run['largest_peak_rss_mib']:.0f} | {stages} | "
                     f"{memory} |")
    if len(runs) > 1:
        lines += ["", f"Ratio {runs[1]['workers']} / {runs[0]['workers']} workers: "
                  f"{runs[1]['blocks_per_hour'] / runs[0]['blocks_per_hour']:.2f}."]
    lines += ["", "Past this machine: the simulation of benchmarks/scaling_model.py "
              "([scaling_model.md](scaling_model.md)), checked against these runs."]
    (RESULTS / f"scaling_{args.preset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def measure(preset: str, n_blocks: int, workers: list[int]) -> list[dict]:
    """Simulate ``n_blocks`` once and run each worker count on them."""
    work = Path(tempfile.mkdtemp(prefix="contimg-scaling-"))
    try:
        staged = work / "staged"
        simulate_blocks(make_config(work / "sim"), staged,
                        SimulationOptions(preset=preset, n_blocks=n_blocks, seed=3))
        return [run_configuration(work / f"w{n}", staged, n, n_blocks) for n in workers]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
