"""``contimg demo``: the main job on simulated DSA-110 data, on a local Dask cluster.

Today: simulate blocks of the declination strip of 3C138 (which transits the first block;
one Dask task per subband file), discover and check them as the watcher will, ingest every
usable block into a block store (rephased to its centre in the same pass), flag it, solve
bandpass and gains on the block where a calibrator transits, apply them to every block and
export each as a Measurement Set with CORRECTED_DATA, all on the cluster's worker processes.
Later stages join as they land.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.outputs.exports import export_block
from contimg_dask.io.uvh5.discovery import discover_blocks
from contimg_dask.pipeline.calibrate_apply import apply_solutions
from contimg_dask.pipeline.calibrate_solve import find_calibrators, solve_block
from contimg_dask.pipeline.cluster import dask_client
from contimg_dask.pipeline.flag import flag_block
from contimg_dask.simulate import SimulationOptions, simulate_blocks

DEMO_CALIBRATOR = "3C138"  # Perley-Butler standard, dec +16.6: the default strip's


def _ingest_and_flag(config: PipelineConfig, incoming: Path, stores: Path) -> list[Path]:
    discovery = discover_blocks(incoming, config.blocks)
    (incoming.parent / "blocks.json").write_text(json.dumps(discovery.to_dict(), indent=2))
    out = []
    for block in discovery.blocks:
        files = [Path(f.path) for _, f in sorted(block.files.items())]
        first = block.files[min(block.files)]
        print(f"  block {block.block_id}: {block.status}, {len(files)} subbands, "
              f"{first.n_times} integrations x {first.n_baselines} baselines x "
              f"{first.n_freqs} channels x {first.n_pols} pols")
        if not block.usable:
            continue
        t0 = time.perf_counter()
        store = ingest_block(files, stores / f"{block.block_id.replace(':', '-')}.zarr",
                             config, block.block_id)
        t1 = time.perf_counter()
        fractions = flag_block(store, config.flagging)
        print(f"    ingest + rephase {t1 - t0:.1f} s -> {store}\n"
              f"    flag {time.perf_counter() - t1:.1f} s: {100 * fractions['block']:.1f} % "
              "flagged")
        out.append(store)
    return out


def _solve(config: PipelineConfig, stores: list[Path], products: Path) -> Path | None:
    """Solve on the first block a calibrator transits; None if none does."""
    for store in stores:
        _, _, best = find_calibrators(store, config)
        if best is None:
            continue
        t0 = time.perf_counter()
        summary = solve_block(store, config, products / "solutions.zarr")
        print(f"  calibrator {best.name} ({best.apparent_flux_jy:.1f} Jy apparent) transits "
              f"{store.name}: solved in {time.perf_counter() - t0:.1f} s, bandpass median "
              f"SNR {summary['bandpass_median_snr']:.0f}, refant {summary['refant']}")
        return products / "solutions.zarr"
    print("  no calibrator transits any block: exporting uncalibrated data")
    return None


def run_demo(config: PipelineConfig, out: Path, preset: str = "small", n_blocks: int = 2) -> int:
    """Run the demo into ``out`` (recreated). Returns the process exit code."""
    if out.exists():
        shutil.rmtree(out)
    incoming, stores, products = out / "incoming", out / "stores", out / "products"
    products.mkdir(parents=True)
    with dask_client(config.dask) as client:
        print(f"Dask dashboard: {client.dashboard_link}")
        t0 = time.perf_counter()
        summaries = simulate_blocks(
            config, incoming,
            SimulationOptions(preset=preset, n_blocks=n_blocks, transit=DEMO_CALIBRATOR))
        print(f"simulated {len(summaries)} {preset} block(s) in "
              f"{time.perf_counter() - t0:.1f} s into {incoming}")
        ready = _ingest_and_flag(config, incoming, stores)
        solutions = _solve(config, ready, products)
        for store in ready:
            t0 = time.perf_counter()
            if solutions is not None:
                apply_solutions(store, solutions, config)
            t1 = time.perf_counter()
            ms = export_block(store, products / store.name.replace(".zarr", ".ms"), "ms",
                              config)
            print(f"  {store.name}: calibrated {t1 - t0:.1f} s, MS export "
                  f"{time.perf_counter() - t1:.1f} s -> {ms}")
    print(f"block report: {out / 'blocks.json'}")
    return 0 if len(ready) == len(summaries) and solutions is not None else 1
