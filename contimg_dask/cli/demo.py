"""``contimg demo``: the main job on simulated DSA-110 data, on a local Dask cluster.

Today: simulate blocks (one Dask task per subband file, on the cluster's worker processes),
then discover and check them as the pipeline's watcher will. Later stages join as they land.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.io.discovery import discover_blocks
from contimg_dask.pipeline.cluster import dask_client
from contimg_dask.simulate import SimulationOptions, simulate_blocks


def run_demo(config: PipelineConfig, out: Path, preset: str = "small", n_blocks: int = 2) -> int:
    """Run the demo into ``out`` (recreated). Returns the process exit code."""
    incoming = out / "incoming"
    if incoming.exists():
        shutil.rmtree(incoming)
    with dask_client(config.dask) as client:
        print(f"Dask dashboard: {client.dashboard_link}")
        t0 = time.perf_counter()
        summaries = simulate_blocks(
            config, incoming,
            SimulationOptions(preset=preset, n_blocks=n_blocks, calibrator=True))
        print(f"simulated {len(summaries)} {preset} block(s) in "
              f"{time.perf_counter() - t0:.1f} s into {incoming}")
    discovery = discover_blocks(incoming, config.blocks)
    for block in discovery.blocks:
        files = block.files.values()
        size = sum(f.size_bytes for f in files) / 1e6
        first = next(iter(files))
        print(f"  block {block.block_id}: {block.status}, {len(block.files)} subbands, "
              f"{first.n_times} integrations x {first.n_baselines} baselines x "
              f"{first.n_freqs} channels x {first.n_pols} pols, {size:.1f} MB")
    report = out / "blocks.json"
    report.write_text(json.dumps(discovery.to_dict(), indent=2))
    print(f"block report: {report}")
    return 0 if all(b.usable for b in discovery.blocks) else 1
