"""``contimg demo``: the main job on simulated DSA-110 data, on a local Dask cluster.

Today: simulate blocks (one Dask task per subband file), discover and check them as the
watcher will, then ingest every usable block into a block store (rephased to its centre in
the same pass) and export a Measurement Set, all on the cluster's worker processes. Later
stages join as they land.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.io.discovery import discover_blocks
from contimg_dask.io.exports import export_block
from contimg_dask.io.ingest import ingest_block
from contimg_dask.pipeline.cluster import dask_client
from contimg_dask.simulate import SimulationOptions, simulate_blocks


def run_demo(config: PipelineConfig, out: Path, preset: str = "small", n_blocks: int = 2) -> int:
    """Run the demo into ``out`` (recreated). Returns the process exit code."""
    if out.exists():
        shutil.rmtree(out)
    incoming, stores, products = out / "incoming", out / "stores", out / "products"
    with dask_client(config.dask) as client:
        print(f"Dask dashboard: {client.dashboard_link}")
        t0 = time.perf_counter()
        summaries = simulate_blocks(
            config, incoming,
            SimulationOptions(preset=preset, n_blocks=n_blocks, calibrator=True))
        print(f"simulated {len(summaries)} {preset} block(s) in "
              f"{time.perf_counter() - t0:.1f} s into {incoming}")
        discovery = discover_blocks(incoming, config.blocks)
        (out / "blocks.json").write_text(json.dumps(discovery.to_dict(), indent=2))
        for block in discovery.blocks:
            files = [Path(f.path) for _, f in sorted(block.files.items())]
            first = block.files[min(block.files)]
            print(f"  block {block.block_id}: {block.status}, {len(files)} subbands, "
                  f"{first.n_times} integrations x {first.n_baselines} baselines x "
                  f"{first.n_freqs} channels x {first.n_pols} pols")
            if not block.usable:
                continue
            name = block.block_id.replace(":", "-")
            t0 = time.perf_counter()
            store = ingest_block(files, stores / f"{name}.zarr", config, block.block_id)
            t1 = time.perf_counter()
            ms = export_block(store, products / f"{name}.ms", "ms", config)
            t2 = time.perf_counter()
            print(f"    ingest + rephase {t1 - t0:.1f} s -> {store}\n"
                  f"    MS export {t2 - t1:.1f} s -> {ms}")
    print(f"block report: {out / 'blocks.json'}")
    return 0 if all(b.usable for b in discovery.blocks) else 1
