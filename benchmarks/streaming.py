"""Streaming figures: latency from a block's last subband landing on the incoming directory
to its image being recorded, and sustained blocks per hour, for ``contimg watch`` side by
side with ``contimg run`` (batch, the same blocks already on disk) in the same run.

    python -m benchmarks.streaming [--preset small] [--blocks 3] [--interval 0]
                                   [--set imaging.engine=wsclean ...]

Both run the configured recipes (ingest, flag, solve on the calibrator block, apply, image;
stages not built yet are skipped) on simulated blocks of ``--preset`` (3C138 transits the
first; cached under benchmarks/cache/) in child processes with the testing environment,
the demo's image grid for the small preset and the configured one for full blocks, plus
the ``--set`` overrides. The feeder lands each block's 16 subbands as the correlator does
(``*_incomplete.hdf5`` renamed), ``--interval`` seconds apart (0: back to back, which
measures the sustained rate; the telescope's cadence is 309 s). The resident memory of
the watch process tree (its Dask workers and CASA children included) is sampled when each
block's image is recorded. Results land in ``benchmarks/results/streaming_<preset>.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.chains import truth_photometry_catalog
from benchmarks.run import CACHE, RESULTS
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.state import open_state_store
from contimg_dask.testing.streaming import Feeder, start_watch, stop_watch
from tests.helpers import make_config

TELESCOPE_BLOCKS_PER_HOUR = 3600 / 309.0
IMAGE_GRIDS = {"small": {"imaging.imsize": 512, "imaging.cell_arcsec": 10.0}}
IMAGE_STAGE = "image"


def _tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return float("nan")
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def run_streaming(staging: Path, work: Path, interval_s: float, n_blocks: int,
                  overrides: dict[str, str]) -> dict:
    incoming, root = work / "incoming", work / "root"
    incoming.mkdir(parents=True)
    log = work / "watch.log"
    proc = start_watch(incoming, root, {**overrides, "logging.level": "INFO"}, log)
    while "contimg watch: watching" not in (log.read_text() if log.exists() else ""):
        if proc.poll() is not None:
            raise RuntimeError(f"contimg watch exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    config = make_config(root)
    state = open_state_store(config)
    feeder = Feeder(staging, incoming, block_interval_s=interval_s).start()
    t0 = time.time()
    imaged: dict[str, float] = {}
    memory_mb: list[float] = []
    try:
        while len(imaged) < n_blocks:
            if proc.poll() is not None:
                raise RuntimeError(f"contimg watch exited: {log.read_text()[-2000:]}")
            for status in state.stages(status="done"):
                if status.stage == IMAGE_STAGE and status.block_id not in imaged:
                    imaged[status.block_id] = status.updated_at
                    memory_mb.append(_tree_rss_mb(proc.pid))
            failed = state.stages(status="failed")
            if failed:
                raise RuntimeError(f"stages failed: {[f.to_dict() for f in failed]}")
            time.sleep(0.5)
    finally:
        feeder.join()
        stop_watch(proc, signal.SIGTERM)
        state.close()
    # The watcher names a block after its first file to settle, which need not be the
    # earliest-stamped one the feeder names it after: match blocks by their files.
    state = open_state_store(config)
    latencies = {b: imaged[b] - max(feeder.landed[Path(f.path).name] for f in state.files(b))
                 for b in sorted(imaged)}
    state.close()
    first_arrival = min(feeder.landed.values())
    span = max(imaged.values()) - first_arrival
    return {"latency_s": latencies, "span_s": span, "blocks_per_hour": n_blocks / span * 3600,
            "memory_mb_at_each_image": memory_mb, "started_at": t0}


def run_batch(staging: Path, work: Path, n_blocks: int, overrides: dict[str, str]) -> dict:
    root = work / "root"
    sets = [a for k, v in {"paths.root": str(root), **overrides}.items()
            for a in ("--set", f"{k}={v}")]
    t0 = time.time()
    done = subprocess.run([sys.executable, "-m", "contimg_dask.cli.main", "--env", "testing",
                           *sets, "run", str(staging), "--json"], capture_output=True,
                          text=True, check=False)
    seconds = time.time() - t0
    outcomes = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or len(outcomes) != n_blocks:
        raise RuntimeError(f"contimg run failed ({done.returncode}): {done.stderr[-2000:]}")
    # The same end point as the streaming figure: the last image recorded (the run goes on to
    # mosaic and photometry, and starts its own Dask cluster first).
    state = open_state_store(make_config(root, **overrides))
    imaged = [s.updated_at for s in state.stages(status="done") if s.stage == IMAGE_STAGE]
    state.close()
    span = max(imaged) - t0
    return {"seconds": seconds, "span_to_last_image_s": span,
            "blocks_per_hour": n_blocks / span * 3600,
            "outcomes": [o["outcome"] for o in outcomes]}


def _staging(preset: str, n_blocks: int) -> Path:
    """The simulated blocks of ``preset`` (cached: a full block takes minutes)."""
    staging = CACHE / f"streaming_{preset}_{n_blocks}"
    if len(list(staging.glob("*_truth.h5"))) != n_blocks:
        shutil.rmtree(staging, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="contimg-streaming-sim-") as tmp:
            simulate_blocks(make_config(Path(tmp)), staging, SimulationOptions(
                preset=preset, n_blocks=n_blocks, seed=3, transit="3C138"))
    return staging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.0,
                        help="seconds between blocks landing (0: back to back)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="configuration override for both runs")
    args = parser.parse_args()
    staging = _staging(args.preset, args.blocks)
    overrides = {**IMAGE_GRIDS.get(args.preset, {}), "photometry.catalog": str(
        truth_photometry_catalog(staging, CACHE / f"streaming_{args.preset}_catalog.csv")),
                 **dict(item.split("=", 1) for item in args.set)}
    with tempfile.TemporaryDirectory(prefix="contimg-streaming-", dir=CACHE) as tmp:
        work = Path(tmp)
        streaming = run_streaming(staging, work / "streaming", args.interval, args.blocks,
                                  overrides)
        batch = run_batch(staging, work / "batch", args.blocks, overrides)
    result = {"preset": args.preset, "blocks": args.blocks, "interval_s": args.interval,
              "overrides": overrides, "streaming": streaming, "batch": batch,
              "streaming_over_batch_rate": streaming["blocks_per_hour"]
              / batch["blocks_per_hour"],
              "telescope_blocks_per_hour": TELESCOPE_BLOCKS_PER_HOUR}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"streaming_{args.preset}.json").write_text(json.dumps(result, indent=2))
    lat = list(streaming["latency_s"].values())
    lines = [
        f"# Streaming: `contimg watch` and `contimg run`, {args.preset} blocks",
        "",
        f"{args.blocks} {args.preset} blocks (3C138 transits the first), landing "
        f"{args.interval:.0f} s apart; the testing environment's recipes (ingest, flag, "
        f"solve on the calibrator, apply, image, ...); overrides {overrides}. "
        f"One 2-core VM, load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| | contimg watch (streaming) | contimg run (batch) |",
        "| --- | --- | --- |",
        f"| blocks per hour | {streaming['blocks_per_hour']:.1f} | "
        f"{batch['blocks_per_hour']:.1f} |",
        f"| ratio streaming / batch | {result['streaming_over_batch_rate']:.2f} | 1 |",
        f"| ratio to the telescope ({TELESCOPE_BLOCKS_PER_HOUR:.2f} blocks/h) | "
        f"{streaming['blocks_per_hour'] / TELESCOPE_BLOCKS_PER_HOUR:.1f} | "
        f"{batch['blocks_per_hour'] / TELESCOPE_BLOCKS_PER_HOUR:.1f} |",
        "",
        "Blocks per hour: streaming from the first subband landing to the last image "
        "recorded; batch from `contimg run` starting (its Dask cluster's start included) to "
        "the last image recorded.",
        "",
        "Latency, last subband landed -> image recorded (s): "
        + ", ".join(f"{b} {v:.0f}" for b, v in streaming["latency_s"].items())
        + f" (mean {sum(lat) / len(lat):.0f}).",
        "",
        "Resident memory of the watch process tree when each image was recorded (MB): "
        + ", ".join(f"{m:.0f}" for m in streaming["memory_mb_at_each_image"]) + ".",
    ]
    (RESULTS / f"streaming_{args.preset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
