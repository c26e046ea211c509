"""``contimg demo``: the main job on simulated DSA-110 data, on a local Dask cluster.

Simulate blocks of the declination strip of 3C138 (which transits the first block; one Dask
task per subband file), discover and check them as the watcher will, then run them through
the orchestrator (:class:`contimg_dask.pipeline.Pipeline`, state in ``OUT/state.sqlite``):
ingest every usable block into a block store (rephased to its centre in the same pass), flag
it, solve bandpass and gains on the block where a calibrator transits (registered in the
state store), apply them to every block, export each as a Measurement Set with
CORRECTED_DATA and image it (CASA tclean in its own process: FITS images, the
drift-averaged primary beam, PB-corrected image, quick-look PNGs). Later stages (mosaic,
photometry) join as they are registered: the recipes name them already.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import h5py
import pandas as pd

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.io.uvh5.discovery import discover_blocks
from contimg_dask.pipeline import Pipeline
from contimg_dask.pipeline.batch import run_directory
from contimg_dask.pipeline.cluster import dask_client
from contimg_dask.pipeline.recipes import with_overrides
from contimg_dask.science.photometry_catalog import write_photometry_catalog
from contimg_dask.simulate import SimulationOptions, simulate_blocks

DEMO_CALIBRATOR = "3C138"  # a Perley-Butler standard at dec +16.6, on the default strip
#: Image grid per simulation preset. The configured grid (1800 x 8") samples the full array's
#: ~68" x 37" beam. The `small` preset's 12 antennas still span the array (|v| up to ~9,500
#: wavelengths): the cell must keep them inside the uv grid (1/(2 cell) = 10,300 at 10"),
#: else they alias into stripes (the former 256 x 60" grid left the demo's images
#: sidelobe-limited, dynamic range ~25); 512 x 10" covers the inner 1.4 deg around the
#: calibrator at ~1.75x the former grid's imaging time.
DEMO_IMAGE_GRID = {"small": {"imaging.imsize": 512, "imaging.cell_arcsec": 10.0}}
#: The demo's recipes: the configured ones with the Measurement Set export after apply.
DEMO_RECIPES = {
    "calibrator": ["ingest", "flag", "calibrate_solve", "calibrate_apply", "export", "image",
                   "mosaic", "photometry"],
    "target": ["ingest", "flag", "calibrate_apply", "export", "image", "mosaic",
               "photometry"],
}


def _demo_config(config: PipelineConfig, out: Path, preset: str) -> PipelineConfig:
    return with_overrides(config, {
        "paths.stores": str((out / "stores").absolute()),
        "paths.products": str((out / "products").absolute()),
        "state.backend": "sqlite", "state.url": f"sqlite:///{(out / 'state.sqlite').absolute()}",
        **{f"pipeline.recipes.{kind}": [{"stage": s} for s in stages]
           for kind, stages in DEMO_RECIPES.items()},
        **DEMO_IMAGE_GRID.get(preset, {})})


def _reference_catalogue(summaries: list[dict], path: Path) -> Path:
    """The simulated sky (every block's truth sources, flux density at their reference
    frequency) as the photometry reference catalogue: what an NVSS extract of the strip is for
    real data."""
    rows: dict[str, dict] = {}
    for summary in summaries:
        with h5py.File(summary["truth"], "r") as truth:
            for source in json.loads(truth.attrs["truth_json"])["sources"]:
                rows[source["name"]] = {key: source[key] for key in
                                        ("name", "ra_deg", "dec_deg", "flux_jy")}
    write_photometry_catalog(path, pd.DataFrame(sorted(rows.values(), key=lambda r: r["name"])))
    return path


def _print_discovery(incoming: Path, config: PipelineConfig) -> None:
    discovery = discover_blocks(incoming, config.blocks)
    (incoming.parent / "blocks.json").write_text(json.dumps(discovery.to_dict(), indent=2))
    for block in discovery.blocks:
        first = block.files[min(block.files)]
        print(f"  block {block.block_id}: {block.status}, {len(block.files)} subbands, "
              f"{first.n_times} integrations x {first.n_baselines} baselines x "
              f"{first.n_freqs} channels x {first.n_pols} pols")


def _print_block(pipeline: Pipeline, block_id: str) -> None:
    results = {s.stage: s.result for s in pipeline.state.stages(block_id) if s.result}
    if "flag" in results:
        ingest, flag = results["ingest"], results["flag"]
        print(f"  {block_id}: ingest + rephase {ingest['seconds']:.1f} s -> "
              f"{ingest['products'][0]['path']}\n    flag {flag['seconds']:.1f} s: "
              f"{100 * flag['figures']['flagged_fraction']:.1f} % flagged")
    if "calibrate_solve" in results:
        solve = results["calibrate_solve"]
        f = solve["figures"]
        print(f"    calibrator {f['calibrator']} ({f['calibrator_apparent_flux_jy']:.1f} Jy "
              f"apparent) transits this block: solved in {solve['seconds']:.1f} s, "
              f"bandpass median SNR {f['bandpass_median_snr']:.0f}, refant {f['refant']}")
    if "export" in results:
        apply = results.get("calibrate_apply", {"seconds": 0.0})
        export = results["export"]
        print(f"    calibrated {apply['seconds']:.1f} s, MS export {export['seconds']:.1f} s "
              f"-> {export['products'][0]['path']}")
    if "image" in results:
        image = results["image"]
        pbcor = next(p["path"] for p in image["products"] if p["kind"] == "image_pbcor")
        print(f"    image {image['seconds']:.1f} s: noise "
              f"{1e3 * image['figures']['noise_jy']:.1f} mJy/beam -> {pbcor}")
    if "mosaic" in results:
        mosaic = next(p["path"] for p in results["mosaic"]["products"] if p["kind"] == "mosaic")
        print(f"    mosaic ({results['mosaic']['figures']['n_inputs']} block(s)) -> {mosaic}")
    if "photometry" in results:
        photometry = results["photometry"]
        print(f"    photometry: {photometry['figures']['measured']} sources measured -> "
              f"{photometry['products'][0]['path']}")


def run_demo(config: PipelineConfig, out: Path, preset: str = "small", n_blocks: int = 2) -> int:
    """Run the demo into ``out`` (recreated). Returns the process exit code: 0 when every
    block is done and a calibrator was solved."""
    if out.exists():
        shutil.rmtree(out)
    incoming = out / "incoming"
    (out / "products").mkdir(parents=True)
    config = _demo_config(config, out, preset)
    with dask_client(config.dask) as client:
        print(f"Dask dashboard: {client.dashboard_link}")
        t0 = time.perf_counter()
        summaries = simulate_blocks(
            config, incoming,
            SimulationOptions(preset=preset, n_blocks=n_blocks, transit=DEMO_CALIBRATOR))
        print(f"simulated {len(summaries)} {preset} block(s) in "
              f"{time.perf_counter() - t0:.1f} s into {incoming}")
        _print_discovery(incoming, config)
        catalogue = _reference_catalogue(summaries, out / "reference_catalogue.csv")
        config = with_overrides(config, {"photometry.catalog": str(catalogue.absolute())})
        with Pipeline(config, client=client) as pipeline:
            outcomes = run_directory(pipeline, incoming)
            for outcome in outcomes:
                _print_block(pipeline, outcome.block_id)
            solved = [o for o in outcomes if o.kind == "calibrator"]
    if not solved:
        print("  no calibrator transits any block: nothing could be calibrated")
    print(f"block report: {out / 'blocks.json'}")
    tables = out / "products" / "photometry"
    print(f"light curves: contimg lightcurve NAME --out {tables} --plot (NAME from "
          f"{out / 'reference_catalogue.csv'}, e.g. 3C138); candidates: contimg candidates "
          f"--out {tables}")
    done = all(o.outcome == "done" for o in outcomes)
    return 0 if done and len(outcomes) == len(summaries) and solved else 1
