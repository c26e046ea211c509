"""``contimg demo``: the main job on simulated DSA-110 data, on a local Dask cluster.

Today: simulate blocks of the declination strip of 3C138 (which transits the first block;
one Dask task per subband file), discover and check them as the watcher will, ingest every
usable block into a block store (rephased to its centre in the same pass), flag it, solve
bandpass and gains on the block where a calibrator transits, apply them to every block and
export each as a Measurement Set with CORRECTED_DATA and image it (CASA tclean in its own
process: FITS images, the drift-averaged primary beam, PB-corrected image, quick-look PNGs),
every stage through the stage contract (:mod:`contimg_dask.stages`).
Later stages (mosaic, photometry, variability) join as they land.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.io.uvh5.discovery import discover_blocks
from contimg_dask.pipeline.cluster import dask_client
from contimg_dask.processing.calibrate_solve import find_calibrators
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.stages import BlockRef, StageResult
from contimg_dask.stages.layout import block_slug
from contimg_dask.stages.registry import get_stage

if TYPE_CHECKING:
    from dask.distributed import Client

DEMO_CALIBRATOR = "3C138"  # Perley-Butler standard, dec +16.6: the default strip's
#: Image grid per simulation preset. The configured grid (1800 x 8") samples the full array's
#: ~68" x 37" beam. The `small` preset's 12 antennas still span the array (|v| up to ~9,500
#: wavelengths): the cell must keep them inside the uv grid (1/(2 cell) = 10,300 at 10"),
#: else they alias into stripes (the former 256 x 60" grid left the demo's images
#: sidelobe-limited, dynamic range ~25); 512 x 10" covers the inner 1.4 deg around the
#: calibrator at a cost close to the former grid's.
DEMO_IMAGE_GRID = {"small": {"imsize": 512, "cell_arcsec": 10.0}}


def _ingest_and_flag(config: PipelineConfig, incoming: Path, stores: Path,
                     client: Client) -> list[BlockRef]:
    discovery = discover_blocks(incoming, config.blocks)
    (incoming.parent / "blocks.json").write_text(json.dumps(discovery.to_dict(), indent=2))
    out = []
    for block in discovery.blocks:
        files = tuple(Path(f.path) for _, f in sorted(block.files.items()))
        first = block.files[min(block.files)]
        print(f"  block {block.block_id}: {block.status}, {len(files)} subbands, "
              f"{first.n_times} integrations x {first.n_baselines} baselines x "
              f"{first.n_freqs} channels x {first.n_pols} pols")
        if not block.usable:
            continue
        ref = BlockRef(block.block_id, stores / f"{block_slug(block.block_id)}.zarr", files)
        ingest = get_stage("ingest").run(ref, config, client=client)
        flag = get_stage("flag").run(ref, config, client=client)
        print(f"    ingest + rephase {ingest.seconds:.1f} s -> {ref.store}\n"
              f"    flag {flag.seconds:.1f} s: {100 * flag.figures['flagged_fraction']:.1f} % "
              "flagged")
        out.append(ref)
    return out


def _solve(config: PipelineConfig, blocks: list[BlockRef], client: Client
           ) -> StageResult | None:
    """Solve on the first block a calibrator transits; None if none does."""
    for block in blocks:
        _, _, best = find_calibrators(block.store, config)
        if best is None:
            continue
        result = get_stage("calibrate_solve").run(block, config, client=client)
        figures = result.figures
        print(f"  calibrator {figures['calibrator']} "
              f"({figures['calibrator_apparent_flux_jy']:.1f} Jy apparent) transits "
              f"{block.store.name}: solved in {result.seconds:.1f} s, bandpass median "
              f"SNR {figures['bandpass_median_snr']:.0f}, refant {figures['refant']}")
        return result
    print("  no calibrator transits any block: exporting uncalibrated data")
    return None


def run_demo(config: PipelineConfig, out: Path, preset: str = "small", n_blocks: int = 2) -> int:
    """Run the demo into ``out`` (recreated). Returns the process exit code.

    Every stage runs through the stage contract (:mod:`contimg_dask.stages`), with the
    products (solutions, Measurement Sets) under ``out/products``."""
    if out.exists():
        shutil.rmtree(out)
    incoming, stores, products = out / "incoming", out / "stores", out / "products"
    products.mkdir(parents=True)
    config = config.model_copy(update={"paths": config.paths.model_copy(
        update={"products": products.absolute()})})
    if preset in DEMO_IMAGE_GRID:
        config = config.model_copy(update={"imaging": config.imaging.model_copy(
            update=DEMO_IMAGE_GRID[preset])})
    with dask_client(config.dask) as client:
        print(f"Dask dashboard: {client.dashboard_link}")
        t0 = time.perf_counter()
        summaries = simulate_blocks(
            config, incoming,
            SimulationOptions(preset=preset, n_blocks=n_blocks, transit=DEMO_CALIBRATOR))
        print(f"simulated {len(summaries)} {preset} block(s) in "
              f"{time.perf_counter() - t0:.1f} s into {incoming}")
        ready = _ingest_and_flag(config, incoming, stores, client)
        solved = _solve(config, ready, client)
        for block in ready:
            calibrated = 0.0
            if solved is not None:
                calibrated = get_stage("calibrate_apply").run(block, config,
                                                              client=client).seconds
            export = get_stage("export").run(block, config, client=client)
            print(f"  {block.store.name}: calibrated {calibrated:.1f} s, MS export "
                  f"{export.seconds:.1f} s -> {export.product('ms').path}")
            image = get_stage("image").run(block, config, client=client)
            print(f"    image {image.seconds:.1f} s: noise "
                  f"{1e3 * image.figures['noise_jy']:.1f} mJy/beam -> "
                  f"{image.product('image_pbcor').path}")
    print(f"block report: {out / 'blocks.json'}")
    return 0 if len(ready) == len(summaries) and solved is not None else 1
