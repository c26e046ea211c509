"""Advanced use from an interactive ``dask.distributed.Client`` session: simulate a block,
run a custom selection of stages on it through ``Pipeline.process_block`` on the cluster,
then open its block store with xarray and its image with astropy.

    python examples/advanced.py [--root DIR] [--env ENV]

The same lines work in a notebook (use ``await pipeline.aprocess_block(block)`` inside
asyncio code).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr
from astropy.io import fits
from distributed import Client, LocalCluster

from contimg_dask.config import load_config
from contimg_dask.io.uvh5.discovery import discover_blocks
from contimg_dask.pipeline import Pipeline
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.stages import BlockRef
from contimg_dask.stages.layout import block_slug

#: A quick look: the block store and an uncalibrated image on a small grid (the `small`
#: preset's 12 antennas still reach ~9,000 wavelengths, so the cell must stay under ~11").
QUICK_LOOK = [{"stage": "ingest"},
              {"stage": "image", "set": {"imaging.require_calibration": False,
                                         "imaging.imsize": 384, "imaging.cell_arcsec": 10.0}}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("contimg-advanced"))
    parser.add_argument("--env", default="development")
    args = parser.parse_args()
    root = args.root.absolute()
    config = load_config(environment=args.env, overrides={
        "paths.root": str(root), "pipeline.recipes.calibrator": QUICK_LOOK,
        "pipeline.recipes.target": QUICK_LOOK})

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        print(f"Dask dashboard: {client.dashboard_link}")
        simulate_blocks(config, root / "incoming",
                        SimulationOptions(preset="small", n_blocks=1, seed=7))
        found = discover_blocks(root / "incoming", config.blocks).blocks[0]
        block = BlockRef(found.block_id,
                         config.paths.resolved().stores / f"{block_slug(found.block_id)}.zarr",
                         tuple(Path(f.path) for _, f in sorted(found.files.items())))
        with Pipeline(config, client=client) as pipeline:
            outcome = pipeline.process_block(block)
    print(f"{outcome.block_id}: {outcome.outcome}, stages {outcome.stages}")

    # The block store is an MSv4 processing set: a zarr DataTree xarray opens lazily.
    tree = xr.open_datatree(block.store, engine="zarr")
    node = tree[next(iter(tree.children))].to_dataset(inherit=False)
    amplitude = np.abs(node.VISIBILITY).where(~node.FLAG).mean().compute()
    print(f"block store {block.store}: VISIBILITY {dict(node.VISIBILITY.sizes)}, "
          f"mean unflagged amplitude {float(amplitude):.3f} Jy")

    image_path = next(Path(p["path"]) for p in outcome.products if p["kind"] == "image_pbcor")
    with fits.open(image_path) as hdul:
        data, header = hdul[0].data.squeeze(), hdul[0].header
    print(f"image {image_path.name}: {data.shape[1]} x {data.shape[0]} pixels of "
          f"{abs(header['CDELT1']) * 3600:.0f} arcsec, peak {np.nanmax(data):.3f} "
          f"{header['BUNIT']}, beam {header['BMAJ'] * 3600:.0f} arcsec")


if __name__ == "__main__":
    main()
