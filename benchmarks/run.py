"""Benchmark the data path on a full-size block, side by side with the reference chain.

    python -m benchmarks.run [--preset full]

Simulates one block once (cached in ``benchmarks/cache/``), then runs, on the same files (read
into the page cache right before each timed read) and each in its own process: the floor
(h5py reading the raw arrays), ours (ingest -> rephase -> MS export) and the reference
(pyuvdata read, combine, phase, write_ms). Reports seconds per stage, visibilities per
second, peak memory (process tree) and ratios, as JSON and a markdown table in
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / "cache"
RESULTS = ROOT / "results"


def simulated_block(preset: str) -> Path:
    """The cached simulated block of ``preset`` (simulated on first use)."""
    from contimg_dask.config import load_config
    from contimg_dask.simulate import SimulationOptions, simulate_blocks

    block = CACHE / f"{preset}_block"
    if not list(block.glob("*_truth.h5")):
        shutil.rmtree(block, ignore_errors=True)
        config = load_config(environment="testing", overrides={"paths.root": str(CACHE)})
        simulate_blocks(config, block, SimulationOptions(preset=preset, seed=11,
                                                         calibrator=True))
    return block


def run_chain(name: str, block: Path, work: Path, module: str = "benchmarks.chains") -> dict:
    """Run one chain (of ``module``'s ``CHAINS``) in a fresh process; its result plus its peak
    memory (GiB): the largest sum of resident memory over the chain's process and all its
    descendants (Dask workers, CASA), sampled every 50 ms; its CPU seconds (``cpu_s``: user +
    system of the chain's process and every descendant, the last sample of each; a process
    living under 50 ms may be missed), the figure a loaded machine does not inflate."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}
    os.sync()  # start each chain with no dirty pages left by the one before
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module, name, str(block),
                             str(work)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT.parent)
    root = psutil.Process(proc.pid)
    peak = 0
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        rss = 0
        for p in tree:
            try:
                rss += p.memory_info().rss
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system
            except psutil.Error:
                pass
        peak = max(peak, rss)
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"chain {name} failed:\n{stderr[-3000:]}")
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["process_wall_s"] = wall
    result["peak_rss_gib"] = peak / 2**30
    result["cpu_s"] = sum(cpu.values())
    return result


def n_visibilities(block: Path) -> int:
    import h5py

    total = 0
    for path in block.glob("*_sb*.hdf5"):
        with h5py.File(path, "r") as f:
            total += int(f["Data/visdata"].size)
    return total


def prepare(description: str, work_name: str,
            options: Callable[[argparse.ArgumentParser], None] | None = None,
            ) -> tuple[argparse.Namespace, Path, Path]:
    """Command line (``--preset``, plus what ``options`` adds), the cached simulated block and
    an empty work directory: what every benchmark starts from."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", default="full")
    if options is not None:
        options(parser)
    args = parser.parse_args()
    block = simulated_block(args.preset)
    work = CACHE / work_name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return args, block, work


def main() -> None:
    args, block, work = prepare(__doc__, "work")
    n_vis = n_visibilities(block)
    results = {"floor": run_chain("floor", block, work / "floor")}
    results["ours"] = run_chain("ours", block, work / "ours")
    results["ours_threads"] = run_chain("ours_threads", block, work / "ours_threads")
    (work / "reference").mkdir(parents=True, exist_ok=True)
    (work / "reference" / "centre.json").write_text(json.dumps(results["ours"]["centre_rad"]))
    results["reference"] = run_chain("reference", block, work / "reference")
    shutil.rmtree(work, ignore_errors=True)

    ours = results["ours"]
    chain = ("ingest_and_rephase", "ms_export")
    ours_total = sum(ours[k] for k in chain)
    ref_total = sum(results["reference"][k] for k in ("read", "combine", "phase", "write_ms"))
    floor_s = results["floor"]["read_raw"]
    summary = {
        "preset": args.preset,
        "visibilities": n_vis,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "chains": results,
        "totals_s": {"ours": ours_total, "reference": ref_total, "floor": floor_s},
        "ratios": {
            "ingest_over_floor": ours["ingest_only"] / floor_s,
            "reference_over_ours": ref_total / ours_total,
            "ours_peak_over_reference_peak": ours["peak_rss_gib"]
            / results["reference"]["peak_rss_gib"],
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"data_path_{args.preset}.json").write_text(json.dumps(summary, indent=2))
    rows = [
        ("floor: h5py raw read", floor_s, results["floor"]["peak_rss_gib"]),
        ("ours: ingest + rephase (rephased group added, rotation on the fly)",
         ours["ingest_and_rephase"], None),
        ("ours: MS export (rotating while writing)", ours["ms_export"], None),
        ("ours: total (ingest + rephase + MS)", ours_total, ours["peak_rss_gib"]),
        ("ours: ingest alone (no rephase)", ours["ingest_only"], None),
        ("ours: standalone rephase stage on a store (UVWs; rotation on the fly)",
         ours["standalone_rephase"], None),
        ("ours: standalone rephase stage, materialised (rotated visibilities stored)",
         ours["standalone_rephase_materialised"], None),
        ("ours, first block on fresh workers: total", sum(ours["cold"][k] for k in chain),
         None),
        ("ours, threads only (no cluster): total",
         sum(results["ours_threads"][k] for k in chain),
         results["ours_threads"]["peak_rss_gib"]),
        ("reference: pyuvdata read", results["reference"]["read"], None),
        ("reference: combine", results["reference"]["combine"], None),
        ("reference: phase", results["reference"]["phase"], None),
        ("reference: write_ms", results["reference"]["write_ms"], None),
        ("reference: total", ref_total, results["reference"]["peak_rss_gib"]),
    ]
    lines = [f"# Data path benchmark ({args.preset} block, {n_vis / 1e6:.1f} M visibilities, "
             f"{os.cpu_count()} cores, {summary['date']})", "",
             "| stage | seconds | M vis/s | peak RSS (GiB) |", "| --- | ---: | ---: | ---: |"]
    for label, seconds, peak in rows:
        lines.append(f"| {label} | {seconds:.2f} | {n_vis / seconds / 1e6:.1f} | "
                     f"{'' if peak is None else f'{peak:.2f}'} |")
    r = summary["ratios"]
    lines += ["", f"- ingest / floor: {r['ingest_over_floor']:.2f} (target <= 1.5)",
              f"- reference / ours (ingest+rephase+MS): {r['reference_over_ours']:.2f} "
              "(target >= 3)",
              f"- ours peak / reference peak: {r['ours_peak_over_reference_peak']:.2f} "
              "(target < 1)"]
    (RESULTS / f"data_path_{args.preset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
