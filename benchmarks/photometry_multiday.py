"""End to end over many days: the same strip observed at the same sidereal time on N days
(default 10), one source made variable; simulate -> ingest -> image stage (CASA tclean) ->
photometry stage, then the candidates. The variable source must be the only candidate.

The blocks carry noise but no instrumental gains or RFI (the calibration path has its own
end-to-end tests), so they are imaged with ``imaging.require_calibration: false``. Ten point
sources of 0.5-3 Jy within 1 deg of the centre; source V drops to ``--dip`` of its flux from
day 4 to day 7. The reference catalogue lists every source at its day-0 flux.

    python -m benchmarks.photometry_multiday [--days 10] [--work DIR]

Writes benchmarks/results/photometry_multiday.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from contimg_dask.config import load_config
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.photometry.search import current_candidates
from contimg_dask.photometry.tables import PhotometryTables, photometry_root
from contimg_dask.science.photometry_catalog import read_photometry_catalog
from contimg_dask.science.skymodel import PointSource, write_catalog
from contimg_dask.simulate import SimulationOptions, plan_blocks, simulate_blocks
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.image import ImageStage
from contimg_dask.stages.photometry import PhotometryStage
from contimg_dask.state import open_state_store

RESULTS = Path(__file__).parent / "results"
SIDEREAL_DAY_S = 86164.0905
START = dt.datetime(2026, 1, 15, 12, 0, 0, tzinfo=dt.UTC)
# (east deg, north deg, Jy at 1.4 GHz) from the block's centre; V is the first.
SOURCES = [(0.3, 0.2, 1.5), (0.0, 0.0, 3.0), (0.8, -0.3, 1.0), (-0.6, 0.5, 2.0),
           (-0.2, -0.8, 1.2), (0.5, 0.7, 0.8), (-0.9, -0.2, 2.5), (0.2, -0.5, 0.6),
           (-0.4, 0.9, 1.8), (0.9, 0.4, 0.5)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--dip", type=float, default=0.6)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="multiday-"))
    overrides = {"paths.root": str(work), "simulation.presets.small.n_antennas": 48,
                 "imaging.require_calibration": False, "imaging.imsize": 1024,
                 "imaging.cell_arcsec": 10.0, "imaging.niter": 500,
                 "imaging.deconvolver": "hogbom", "imaging.quicklook": False,
                 "casa.task_timeout_s": 3600.0, "photometry.catalog": str(work / "ref.csv")}
    config = load_config(environment="testing", overrides=overrides, environ={})
    base = SimulationOptions(preset="small", random_sources=False, noise=True, gains=False,
                             rfi=False)
    centre = plan_blocks(config, dataclasses.replace(base, start=START))[0].truth
    ra0 = np.degrees(np.mean(centre["phase_centre_icrs_ra_rad"][11:13]))
    dec0 = np.degrees(np.mean(centre["phase_centre_icrs_dec_rad"]))
    names = ["V", *[f"C{i}" for i in range(1, len(SOURCES))]]
    ra = [ra0 + dx / np.cos(np.radians(dec0)) for dx, _, _ in SOURCES]
    dec = [dec0 + dy for _, dy, _ in SOURCES]
    flux = [s for _, _, s in SOURCES]
    pd.DataFrame({"name": names, "ra_deg": ra, "dec_deg": dec, "flux_jy": flux}).to_csv(
        work / "ref.csv", index=False)
    timings = []
    for day in range(args.days):
        t0 = time.perf_counter()
        today = [f * (args.dip if (name == "V" and 4 <= day <= 7) else 1.0)
                 for name, f in zip(names, flux, strict=True)]
        sky = work / f"sky_{day}.csv"
        write_catalog([PointSource(n, r, d, f, 1.4e9, -0.7) for n, r, d, f in
                       zip(names, ra, dec, today, strict=True)], sky)
        options = dataclasses.replace(base, catalog=sky, seed=day, start=START + dt.timedelta(
            seconds=day * SIDEREAL_DAY_S))
        (summary,) = simulate_blocks(config, work / f"incoming_{day}", options)
        store = ingest_block([Path(f) for f in summary["files"]], work / f"day{day}.zarr",
                             config)
        block = BlockRef(read_geometry(store).block_id, store)
        image = ImageStage().run(block, config)
        phot = PhotometryStage().run(block, config)
        timings.append({"day": day, "block": block.block_id, "seconds":
                        time.perf_counter() - t0, "noise_jy": image.figures["noise_jy"],
                        "scale": phot.figures["scale"], "references": phot.figures["references"]})
        print(json.dumps(timings[-1]), flush=True)
    tables = PhotometryTables(photometry_root(config))
    version = read_photometry_catalog(work / "ref.csv").version
    state = open_state_store(config)
    try:
        candidates = current_candidates(tables, version, config.photometry.variability, state)
    finally:
        state.close()
    found = sorted({c["name"] for c in candidates})
    lc = tables.measurements(version, ["V"]).sort_values("mjd")
    result = {"days": args.days, "dip": args.dip, "candidates": candidates, "found": found,
              "only_v": found == ["V"], "days_detail": timings,
              "v_normalised_jy": lc["norm_flux_jy"].round(4).tolist()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "photometry_multiday.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "photometry_multiday.md").write_text(
        f"{args.days} days at the same sidereal time, source V at {args.dip:.0%} on days "
        f"4-7: candidates {found} ({', '.join(c['kind'] for c in candidates)}); only V: "
        f"{found == ['V']}. V normalised (Jy): {result['v_normalised_jy']}. Per day: "
        f"{np.mean([t['seconds'] for t in timings]):.0f} s, image noise "
        f"{1e3 * np.mean([t['noise_jy'] for t in timings]):.1f} mJy/beam, flux scales "
        f"{[round(t['scale'], 3) for t in timings]}.\n")
    print(json.dumps({"found": found, "only_v": found == ["V"]}))


if __name__ == "__main__":
    main()
