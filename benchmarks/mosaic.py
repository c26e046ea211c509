"""Mosaicking side by side: ours (Dask tasks over output tiles, out of core) against
``reproject_and_coadd`` used naively (every input in memory, PB²/σ² weight images), on the
same full-size block images.

    python -m benchmarks.mosaic [--blocks 1 4 12 48]

Inputs: synthetic images of the image stage's full-block size (``imaging.imsize`` x
``imaging.cell_arcsec`` of config/pipeline.yaml: 1800 x 8"), restoring beam 68.3" x 36.9"
(the full array's, benchmarks/results/imaging_full.md), beam-correlated noise of 10 mJy/beam,
the Airy PB, consecutive drift-scan blocks 1.29 deg apart in RA at dec 16.1
(contimg_dask/testing/mosaic_images.py). They are cached in ``benchmarks/cache/mosaic_inputs``.

Chains, each in its own process (peak memory of the process tree sampled every 50 ms):

- ``ours``: ``contimg mosaic``'s engine (survey, accumulators, FITS mosaic and noise map) on
  local threads (``dask.n_workers`` = 2), bicubic interpolation, no PNG;
- ``ours_reproject_interp``: the same with ``regrid_step_px: 0``, ``reproject_interp``
  transforming every output pixel's coordinates (on the same tiles and cut-outs);
- ``ours_cluster``: the same as ``ours`` on a LocalCluster of 2 worker processes (cluster
  start included);
- ``incremental`` (run with ``--chains incremental``): the mosaic built as the stage builds
  it, the first block then one add per further block; bytes written (``/proc/self/io``
  ``write_bytes``: pages dirtied through write() or memory maps) and CPU seconds per add;
- ``casa_linearmosaic``: CASA's ``linearmosaic`` tool on the same inputs and grid, in a
  CASA worker process (contimg_dask/testing/casa_mosaic.py: its weights are PB² alone, ours
  PB²/σ², the same here where every input has σ = 10 mJy/beam), with its pixels compared
  to ours on its output grid;
- ``naive``: every input image read, PB-corrected, its weight PB²/σ² (0 below the cutoff)
  computed, and one ``reproject_and_coadd(..., combine_function='mean')`` onto the grid of
  ``find_optimal_celestial_wcs``, its default (bilinear) interpolation; the mosaic and the
  noise map 1/√footprint written as FITS.

Each chain reports std(mosaic / noise map) over the covered pixels (1.00 is right).
Results: ``benchmarks/results/mosaic.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.run import CACHE, RESULTS, run_chain

BEAM_ARCSEC = (68.3, 36.9, 0.0)
NOISE_JY = 0.01


def _config():
    from contimg_dask.config import load_config

    return load_config(environment="testing", overrides={"paths.root": str(CACHE)})


def prepare_inputs(n: int) -> Path:
    """A directory with links to the first ``n`` cached full-size block images."""
    from contimg_dask.ops.mosaic import GaussianBeam
    from contimg_dask.testing.mosaic_images import SIDEREAL_DEG_PER_S, block_ids, write_block_image

    config = _config()
    cache = CACHE / "mosaic_inputs"
    ids = block_ids(n)
    beam = GaussianBeam(*(v / 3600 for v in BEAM_ARCSEC[:2]), BEAM_ARCSEC[2])
    for i, block_id in enumerate(ids):
        if not (cache / block_id.replace(":", "") / f"{block_id.replace(':', '')}.image.json"
                ).exists():
            shutil.rmtree(cache / block_id.replace(":", ""), ignore_errors=True)
            write_block_image(cache, block_id, 150.0 + i * SIDEREAL_DEG_PER_S * 309.237648,
                              16.1, imsize=config.imaging.imsize,
                              cell_deg=config.imaging.cell_arcsec / 3600, beam=beam,
                              noise_jy=NOISE_JY, seed=100 + i)
    selection = CACHE / f"mosaic_select_{n}"
    shutil.rmtree(selection, ignore_errors=True)
    selection.mkdir()
    for block_id in ids:
        (selection / block_id.replace(":", "")).symlink_to(cache / block_id.replace(":", ""))
    return selection


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its waited-for children so far: on a
    shared machine the wall time depends on the load, this does not."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _normalised_std(mosaic: np.ndarray, noise: np.ndarray) -> float:
    ratio = mosaic / noise
    return float(np.nanstd(ratio[np.isfinite(ratio)]))


def _ours(images: Path, work: Path, client=None, **overrides: object) -> dict:
    from astropy.io import fits

    from contimg_dask.imaging.mosaic_build import MosaicSettings
    from contimg_dask.imaging.mosaic_inputs import Selection, select_inputs
    from contimg_dask.imaging.mosaic_writer import new_mosaic

    config = _config()
    t0, cpu0 = time.perf_counter(), _cpu_s()
    inputs = select_inputs([images], Selection())
    out = work / "ours"
    out.mkdir()
    settings = dataclasses.replace(MosaicSettings.from_config(
        config.mosaic, workers=config.dask.n_workers), **overrides)
    outcome = new_mosaic(inputs, settings, out, "m", provenance={}, client=client,
                         quicklook=False)
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    mosaic = fits.getdata(outcome.files["mosaic"])
    noise = fits.getdata(outcome.files["noise"])
    return {"seconds": seconds, "cpu_s": cpu, "pixels": int(mosaic.size),
            "shape": list(mosaic.shape), "normalised_std": _normalised_std(mosaic, noise), **{
                k: v for k, v in outcome.figures.items() if k.endswith("_s")}}


def ours(images: Path, work: Path) -> dict:
    return _ours(images, work)


def ours_reproject_interp(images: Path, work: Path) -> dict:
    return _ours(images, work, regrid_step_px=0)


def ours_cluster(images: Path, work: Path) -> dict:
    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result = _ours(images, work, client)
    result["seconds_with_cluster_start"] = time.perf_counter() - t0
    return result


def naive(images: Path, work: Path) -> dict:
    from astropy.io import fits
    from reproject import reproject_interp
    from reproject.mosaicking import find_optimal_celestial_wcs, reproject_and_coadd

    from contimg_dask.imaging.mosaic_inputs import Selection, select_inputs
    from contimg_dask.imaging.products import celestial_wcs, read_plane

    cutoff = _config().mosaic.pb_cutoff
    t0, cpu0 = time.perf_counter(), _cpu_s()
    data, weights = [], []
    for item in select_inputs([images], Selection()):
        image, header = read_plane(item.image)
        pb, _ = read_plane(item.pb)
        inside = pb >= cutoff
        wcs = celestial_wcs(header)
        data.append((np.where(inside, image / pb, np.nan), wcs))
        weights.append(np.where(inside, pb ** 2 / item.noise_jy ** 2, 0.0))
    wcs_out, shape_out = find_optimal_celestial_wcs(data)
    mosaic, footprint = reproject_and_coadd(data, wcs_out, shape_out=shape_out,
                                            input_weights=weights,
                                            reproject_function=reproject_interp,
                                            combine_function="mean",
                                            blank_pixel_value=np.nan)
    noise = np.where(footprint > 0, 1 / np.sqrt(np.where(footprint > 0, footprint, 1)), np.nan)
    header = wcs_out.to_header()
    fits.PrimaryHDU(mosaic.astype(np.float32), header).writeto(work / "naive.fits")
    fits.PrimaryHDU(noise.astype(np.float32), header).writeto(work / "naive.noise.fits")
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    return {"seconds": seconds, "cpu_s": cpu, "pixels": int(mosaic.size),
            "shape": list(mosaic.shape), "normalised_std": _normalised_std(mosaic, noise)}


def casa_linearmosaic(images: Path, work: Path) -> dict:
    """CASA's ``linearmosaic`` (in a CASA worker process; its CPU seconds are this chain's
    children's) of the same inputs onto ours' grid, PBs set to 0 below our cutoff
    (contimg_dask/testing/casa_mosaic.py). Then, untimed, ours on CASA's output grid for the
    pixel comparison: |ours - CASA| / our noise map, and CASA's weight Σ PB² against ours
    (σ²/noise², σ the inputs' mean noise: the benchmark's inputs all have 10 mJy/beam)."""
    from astropy.io import fits

    from contimg_dask.imaging.mosaic_build import MosaicSettings, grid_for, surveys
    from contimg_dask.imaging.mosaic_inputs import Selection, select_inputs
    from contimg_dask.imaging.mosaic_writer import new_mosaic
    from contimg_dask.ops.mosaic import MosaicGrid
    from contimg_dask.testing.casa_mosaic import casa_linear_mosaic

    config = _config()
    settings = MosaicSettings.from_config(config.mosaic, workers=config.dask.n_workers)
    inputs = select_inputs([images], Selection())
    grid = grid_for(surveys(inputs, settings, None), min(i.cell_deg for i in inputs),
                    settings.projection)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    casa = casa_linear_mosaic(config, [i.image for i in inputs], [i.pb for i in inputs],
                              settings.pb_cutoff, grid.nx, grid.ny, grid.cell_deg * 3600,
                              (grid.ra_deg, grid.dec_deg), work / "casa")
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    header = fits.getheader(casa["mosaic"])
    theirs = np.squeeze(fits.getdata(casa["mosaic"]))
    weight = np.squeeze(fits.getdata(casa["weight"]))
    sigma = float(np.mean([i.noise_jy for i in inputs]))
    casa_noise = np.where(np.nan_to_num(weight) > 0, sigma / np.sqrt(np.abs(weight)), np.nan)
    on_casa_grid = MosaicGrid(header["CRVAL1"], header["CRVAL2"], abs(header["CDELT2"]),
                              header["NAXIS1"], header["NAXIS2"], header["CRPIX1"],
                              header["CRPIX2"], settings.projection)
    (work / "ours").mkdir()
    ours = new_mosaic(inputs, settings, work / "ours", "m", provenance={}, grid=on_casa_grid,
                      quicklook=False)
    mosaic, noise = (fits.getdata(ours.files[k]) for k in ("mosaic", "noise"))
    both = np.isfinite(mosaic) & np.isfinite(theirs) & (np.nan_to_num(weight) > 0)
    difference = np.abs(mosaic - theirs)[both] / noise[both]
    weight_ratio = weight[both] / (sigma ** 2 / noise[both].astype(np.float64) ** 2)
    return {"seconds": seconds, "cpu_s": cpu, "casa_process_cpu_s": casa["cpu_s"],
            "casa_version": casa["casa_version"], "pixels": int(theirs.size),
            "shape": list(theirs.shape),
            "normalised_std": _normalised_std(theirs[both], casa_noise[both]),
            "vs_ours_median_abs_diff_over_noise": float(np.median(difference)),
            "vs_ours_p99_abs_diff_over_noise": float(np.percentile(difference, 99)),
            "weight_ratio_p1_p50_p99": [float(v) for v in
                                        np.percentile(weight_ratio, [1, 50, 99])]}


def _written_bytes() -> int:
    """Bytes this process (all its threads) has dirtied for storage so far, through write()
    or memory maps (/proc/self/io ``write_bytes``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def _add_one(directory: Path, item, settings) -> None:
    """One block added to the mosaic in ``directory`` as the stage adds it: in place
    (imaging/mosaic_update.py) or, run on the code before it, by updating a copy of the
    accumulators and rewriting the mosaic into a directory swapped in atomically."""
    try:
        from contimg_dask.imaging.mosaic_update import add_in_place
    except ImportError:
        from contimg_dask.imaging.mosaic_writer import add_to_mosaic
        from contimg_dask.io.system.atomic import atomic_directory
        from contimg_dask.stages.mosaic import MOSAIC_PRODUCTS

        with atomic_directory(directory, MOSAIC_PRODUCTS) as tmp:
            tmp.mkdir()
            add_to_mosaic(directory, [item], settings, tmp, "m", provenance={})
        return
    add_in_place(directory, [item], settings, "m", provenance={})


def incremental(images: Path, work: Path) -> dict:
    """The mosaic of the blocks built as the stage builds it: the first block makes it (on
    the grid of all of them), each further block is added; bytes written and CPU s per add."""
    from astropy.io import fits

    from contimg_dask.imaging.mosaic_build import MosaicSettings, grid_for, surveys
    from contimg_dask.imaging.mosaic_inputs import Selection, select_inputs
    from contimg_dask.imaging.mosaic_writer import mosaic_files, new_mosaic

    config = _config()
    settings = MosaicSettings.from_config(config.mosaic, workers=config.dask.n_workers)
    inputs = select_inputs([images], Selection())
    grid = grid_for(surveys(inputs, settings, None), min(i.cell_deg for i in inputs),
                    settings.projection)
    directory = work / "m"
    directory.mkdir(parents=True)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    new_mosaic(inputs[:1], settings, directory, "m", provenance={}, grid=grid)
    adds = []
    for item in inputs[1:]:
        written, cpu = _written_bytes(), _cpu_s()
        _add_one(directory, item, settings)
        adds.append({"block_id": item.block_id, "written_bytes": _written_bytes() - written,
                     "cpu_s": _cpu_s() - cpu})
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    files = mosaic_files(directory, "m")
    mosaic, noise = fits.getdata(files["mosaic"]), fits.getdata(files["noise"])
    sizes = {kind: sum(f.stat().st_size for f in ([path] if path.is_file() else
                                                  path.rglob("*")) if f.is_file())
             for kind, path in files.items() if path.exists()}
    return {"seconds": seconds, "cpu_s": cpu, "pixels": int(mosaic.size),
            "shape": list(mosaic.shape), "normalised_std": _normalised_std(mosaic, noise),
            "adds": adds, "mosaic_bytes": sizes,
            "mean_written_bytes_per_add": float(np.mean([a["written_bytes"] for a in adds])),
            "mean_cpu_s_per_add": float(np.mean([a["cpu_s"] for a in adds]))}


CHAINS = {"ours": ours, "ours_reproject_interp": ours_reproject_interp,
          "ours_cluster": ours_cluster, "naive": naive, "incremental": incremental,
          "casa_linearmosaic": casa_linearmosaic}


def _table(results: dict) -> str:
    lines = ["| blocks | chain | compute wall s | CPU s | process wall s | peak GiB | output "
             "pixels | std(mosaic/noise) | wall / naive |", "|---|---|---|---|---|---|---|---|---|"]
    for n, chains in results.items():
        naive_s = chains.get("naive", {}).get("seconds")
        for name, r in chains.items():
            ratio = f"{r['seconds'] / naive_s:.2f}" if naive_s and name != "naive" else ""
            cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else "-"
            lines.append(f"| {n} | {name} | {r['seconds']:.1f} | {cpu} | "
                         f"{r['process_wall_s']:.1f} | {r['peak_rss_gib']:.2f} | "
                         f"{r['shape'][1]} x {r['shape'][0]} | {r['normalised_std']:.3f} | "
                         f"{ratio} |")
    for n, chains in results.items():
        if "adds" in chains.get("incremental", {}):
            r = chains["incremental"]
            lines.append(f"\nincremental, {n} blocks: {len(r['adds'])} adds, "
                         f"{r['mean_written_bytes_per_add'] / 2**20:.1f} MiB written and "
                         f"{r['mean_cpu_s_per_add']:.1f} CPU s per add (mosaic directory "
                         f"{sum(r['mosaic_bytes'].values()) / 2**20:.1f} MiB)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 4, 12, 48])
    parser.add_argument("--chains", nargs="+", default=["ours", "ours_reproject_interp",
                                                         "naive"])
    parser.add_argument("--cluster-at", type=int, nargs="*", default=[12],
                        help="block counts at which ours_cluster runs too")
    parser.add_argument("--results", default="mosaic",
                        help="results file stem in benchmarks/results/ (STEM.json, STEM.md)")
    args = parser.parse_args()
    results: dict = {}
    for n in args.blocks:
        images = prepare_inputs(n)
        results[n] = {}
        chains = list(args.chains) + (["ours_cluster"] if n in args.cluster_at else [])
        for name in chains:
            work = CACHE / "mosaic_work" / f"{n}_{name}"
            shutil.rmtree(work, ignore_errors=True)
            results[n][name] = run_chain(name, images, work, module="benchmarks.mosaic")
            shutil.rmtree(work, ignore_errors=True)
            print(n, name, json.dumps(results[n][name]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{args.results}.md").write_text(
        "# Mosaic benchmark (benchmarks/mosaic.py)\n\n" + _table(results) + "\n")
    print(_table(results))


if __name__ == "__main__":
    from benchmarks.chains import chain_or_main

    chain_or_main(CHAINS, main)
