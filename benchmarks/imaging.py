"""Imaging side by side on a full block: our image stage (tclean and WSClean) against the
reference, CASA tclean on the Measurement Set pyuvdata writes (benchmarks/chains.py).

    python -m benchmarks.imaging [--preset full]

The block is simulated without instrumental gains (a 20 Jy calibrator transits its middle,
plus the simulator's random sky), so that every chain images the same true sky without a
calibration step in between (ours runs with ``imaging.require_calibration: false``). It is
ingested once, untimed. Then, each chain in its own process (peak memory of the process
tree sampled):

- ``ours_tclean``: the image stage (MS export for imaging with 16 channels per subband,
  tclean in a CASA worker, PB, products, PNGs), the configured image size, cell, niter;
- ``ours_wsclean``: the same stage with WSClean;
- ``ours_tclean_bda``, ``ours_wsclean_bda``: the same with the configured baseline-dependent
  time averaging (``imaging.bda_max_loss``; the two above run without it);
- ``reference``: pyuvdata reads, combines, phases and writes the MS (the reference
  conversion, timed apart), then tclean on all 768 channels with the same image size, cell,
  weighting, gridder, deconvolver and niter; its dirty image (niter 0) is timed too.

JSON and markdown in ``benchmarks/results/imaging_<preset>.{json,md}``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.chains import chain_or_main, write_report
from benchmarks.run import CACHE, RESULTS, run_chain


def _config(work: Path, **overrides: object):
    """The testing configuration for a chain's ``work`` directory (under the run's directory,
    beside ``prep``); the calibrator catalogue holds the simulated calibrator (written by
    ``_prepare``), so that ``imaging.deconvolver: auto`` sees it."""
    from contimg_dask.config import load_config

    return load_config(environment="testing", overrides={
        "paths.root": str(work), "imaging.require_calibration": False,
        "casa.task_timeout_s": 7200.0,
        "calibration.catalog": str(work.parent / "prep" / "cal.csv"), **overrides})


def block_without_gains(preset: str) -> Path:
    """The cached simulated block of ``preset`` without instrumental gains or RFI."""
    from contimg_dask.simulate import SimulationOptions, simulate_blocks

    block = CACHE / f"{preset}_block_nogains"
    if not list(block.glob("*_truth.h5")):
        shutil.rmtree(block, ignore_errors=True)
        simulate_blocks(_config(CACHE / "simulate"), block, SimulationOptions(
            preset=preset, seed=11, calibrator=True, gains=False, rfi=False))
    return block


def _store(work: Path) -> Path:
    return work.parent / "prep" / "block.zarr"


def _ours(block_dir: Path, work: Path, engine: str, bda_max_loss: float | None,
          threads: int | None = None) -> dict:
    from contimg_dask.io.store.block_view import read_geometry
    from contimg_dask.stages.contract import BlockRef
    from contimg_dask.stages.image import ImageStage

    store = _store(work)
    config = _config(work, **{"imaging.engine": engine, "imaging.bda_max_loss": bda_max_loss},
                     **({} if threads is None else {"imaging.threads": threads}))
    t0 = time.perf_counter()
    own0, children0 = _cpu_seconds(resource.RUSAGE_SELF), _cpu_seconds(resource.RUSAGE_CHILDREN)
    result = ImageStage(work / "images").run(BlockRef(read_geometry(store).block_id, store),
                                             config)
    out = {"total": time.perf_counter() - t0,
           # this process: export, PB, products; its children: the engine (CASA or WSClean)
           # and the MS writer's table-writing process
           "cpu_own_s": _cpu_seconds(resource.RUSAGE_SELF) - own0,
           "cpu_children_s": _cpu_seconds(resource.RUSAGE_CHILDREN) - children0}
    out.update({k: v for k, v in result.figures.items() if k in (
        "export_s", "engine_s", "products_s", "deconvolver", "noise_jy", "peak_jy",
        "dynamic_range", "beam_major_arcsec", "beam_minor_arcsec", "engine_version",
        "channel_average", "imsize", "cell_arcsec", "wprojplanes", "max_w_lambda",
        "deepest_negative_sigma", "rows_per_window", "rows_per_window_recorded",
        "time_average_max_factor")})
    out["sources"] = _source_peaks(block_dir, result.product("image_pbcor").path)
    return out


def _source_peaks(block_dir: Path, image: Path) -> list[dict]:
    """The PB-corrected peak (Jy/beam, fitted restoring beam) of every true source of the
    block above 0.3 Jy inside the image's PB cutoff, with its offset east and north (deg)
    of the image centre: the same sources compared between chains (e.g. with and without
    time averaging)."""
    from astropy.io import fits

    from tests.helpers import read_truth
    from tests.image_fits import fit_point_source

    header = fits.getheader(image)
    ra0, dec0 = header["CRVAL1"], header["CRVAL2"]
    out = []
    for source in read_truth(next(block_dir.glob("*_truth.h5")))["sources"]:
        # WSClean writes RA in (-180, 180]
        east = ((source["ra_deg"] - ra0 + 180) % 360 - 180) * np.cos(np.radians(dec0))
        north = source["dec_deg"] - dec0
        if source["flux_jy"] < 0.3 or np.hypot(east, north) > 1.9:
            continue
        try:
            peak = fit_point_source(image, source["ra_deg"], source["dec_deg"]).peak
        except (ValueError, IndexError):  # blanked (NaN) or at the image's edge
            continue
        out.append({"name": source["name"], "east_deg": float(east),
                    "north_deg": float(north), "peak_jy": float(peak)})
    return out


def _cpu_seconds(who: int) -> float:
    """User + system CPU seconds of this process (RUSAGE_SELF) or of its terminated, waited-for
    descendants (RUSAGE_CHILDREN)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed_chain(chain: str, block: Path, work: Path) -> dict:
    """One chain in its own process (benchmarks/run.py's ``run_chain``) plus the CPU seconds
    of its whole process tree: the load-independent measure on a shared machine."""
    before = _cpu_seconds(resource.RUSAGE_CHILDREN)
    result = run_chain(chain, block, work, module="benchmarks.imaging")
    result["cpu_s"] = _cpu_seconds(resource.RUSAGE_CHILDREN) - before
    result["load_average"] = list(os.getloadavg())
    return result


def ours_tclean(block_dir: Path, work: Path) -> dict:
    return _ours(block_dir, work, "tclean", None)


def ours_wsclean(block_dir: Path, work: Path) -> dict:
    return _ours(block_dir, work, "wsclean", None)


def ours_tclean_bda(block_dir: Path, work: Path) -> dict:
    """``ours_tclean`` with the configured baseline-dependent time averaging."""
    return _ours(block_dir, work, "tclean", _config(work).imaging.bda_max_loss)


def ours_wsclean_bda(block_dir: Path, work: Path) -> dict:
    """``ours_wsclean`` with the configured baseline-dependent time averaging."""
    return _ours(block_dir, work, "wsclean", _config(work).imaging.bda_max_loss)


def reference(block_dir: Path, work: Path) -> dict:
    from benchmarks import chains
    from contimg_dask.casa import run_casa
    from contimg_dask.casa.imaging import tclean_to_fits
    from contimg_dask.imaging.engines import tclean_parameters

    config = _config(work)
    deconvolver = json.loads((work.parent / "prep" / "choice.json").read_text())
    shutil.copy(work.parent / "prep" / "centre.json", work / "centre.json")
    out = {"conversion": chains.reference(block_dir, work)}
    params = tclean_parameters(config.imaging, deconvolver["deconvolver"],
                               deconvolver["reffreq_hz"], deconvolver["wprojplanes"])
    out["conversion_cpu_s"] = _cpu_seconds(resource.RUSAGE_SELF)
    for label, niter in (("tclean_dirty", 0), ("tclean", config.imaging.niter)):
        run_dir = work / label
        run_dir.mkdir()
        t0 = time.perf_counter()
        children0 = _cpu_seconds(resource.RUSAGE_CHILDREN)
        run_casa(config, tclean_to_fits, str(work / "reference.ms"), str(run_dir), params,
                 "data", config.imaging.threshold_sigma, niter, config.imaging.threads,
                 stage="reference")
        out[label] = time.perf_counter() - t0
        out[f"{label}_cpu_s"] = _cpu_seconds(resource.RUSAGE_CHILDREN) - children0
    return out


def export_writer_average(block_dir: Path, work: Path) -> dict:
    """The image stage's export alone: our MS writer averaging 48 -> 16 channels per subband
    as it writes (what the stage does since 2026-11-30)."""
    from contimg_dask.io.outputs.ms_writer import write_ms

    t0 = time.perf_counter()
    write_ms(_store(work), work / "averaged.ms", average_width=3)
    return {"total": time.perf_counter() - t0}


def export_mstransform(block_dir: Path, work: Path) -> dict:
    """The export as the stage did it before: the full-resolution MS from our writer, then a
    CASA ``mstransform`` pass averaging 48 -> 16 channels per subband."""
    from contimg_dask.casa import run_casa
    from contimg_dask.io.outputs.ms_writer import write_ms
    from contimg_dask.testing.casa_tasks import mstransform_average

    t0 = time.perf_counter()
    write_ms(_store(work), work / "full.ms")
    written = time.perf_counter() - t0
    run_casa(_config(work), mstransform_average, str(work / "full.ms"),
             str(work / "averaged.ms"), 3, stage="reference")
    return {"total": time.perf_counter() - t0, "write_s": written,
            "mstransform_s": time.perf_counter() - t0 - written}


def ours_wsclean_bda_2threads(block_dir: Path, work: Path) -> dict:
    """``ours_wsclean_bda`` on both cores (``imaging.threads: 2``): one block on a 2-core
    machine of its own, the issue's "deconvolved full-block image in <= 120 s"."""
    return _ours(block_dir, work, "wsclean", _config(work).imaging.bda_max_loss, threads=2)


CHAINS = {"ours_tclean": ours_tclean, "ours_wsclean": ours_wsclean,
          "ours_tclean_bda": ours_tclean_bda, "ours_wsclean_bda": ours_wsclean_bda,
          "ours_wsclean_bda_2threads": ours_wsclean_bda_2threads,
          "reference": reference,
          "export_writer_average": export_writer_average,
          "export_mstransform": export_mstransform}


def _prepare(block: Path, work: Path) -> None:
    """Ingest once (untimed); record the centre and the deconvolver choice for the reference."""
    from contimg_dask.io.ingest import ingest_block
    from contimg_dask.io.store.block_view import fixed_centre_group
    from contimg_dask.science.skymodel import PointSource, write_catalog
    from contimg_dask.stages.contract import BlockRef
    from contimg_dask.stages.image import BlockSummary, choose_deconvolver
    from tests.helpers import read_truth

    prep = work / "prep"
    prep.mkdir(parents=True)
    truth = read_truth(next(block.glob("*_truth.h5")))
    files = [block / truth["files"][str(sb)] for sb in range(16)]
    config = _config(work / "prep-config")
    store = ingest_block(files, prep / "block.zarr", config)
    view = fixed_centre_group(store, "rephased")
    (prep / "centre.json").write_text(json.dumps([view.ra_rad, view.dec_rad]))
    cal = next(s for s in truth["sources"] if s["name"] == "SIMCAL")
    write_catalog([PointSource(cal["name"], cal["ra_deg"], cal["dec_deg"], cal["flux_jy"],
                               cal["ref_freq_hz"], cal["spectral_index"])], prep / "cal.csv")
    block_ref = BlockRef(truth["block_id"], store)
    deconvolver, _ = choose_deconvolver(block_ref, config)
    summary = BlockSummary(block_ref, config)
    (prep / "choice.json").write_text(json.dumps({
        "deconvolver": deconvolver, "reffreq_hz": summary.reference_frequency_hz,
        "wprojplanes": summary.wprojplanes}))


def _prepare_cached(store: Path, catalog: Path, work: Path) -> None:
    """The same preparation on an ingested, calibrated store cached by another benchmark
    (``--store``, e.g. benchmarks/corrected_reads.py's): linked, not copied, and read only."""
    from contimg_dask.io.store.block_view import fixed_centre_group, read_geometry
    from contimg_dask.stages.contract import BlockRef
    from contimg_dask.stages.image import BlockSummary, choose_deconvolver

    prep = work / "prep"
    prep.mkdir(parents=True)
    (prep / "block.zarr").symlink_to(store.resolve())
    shutil.copy(catalog, prep / "cal.csv")
    view = fixed_centre_group(store, "rephased")
    (prep / "centre.json").write_text(json.dumps([view.ra_rad, view.dec_rad]))
    config = _config(work / "prep-config")
    block_ref = BlockRef(read_geometry(store).block_id, store)
    deconvolver, _ = choose_deconvolver(block_ref, config)
    summary = BlockSummary(block_ref, config)
    (prep / "choice.json").write_text(json.dumps({
        "deconvolver": deconvolver, "reffreq_hz": summary.reference_frequency_hz,
        "wprojplanes": summary.wprojplanes}))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="full")
    parser.add_argument("--chains", default=",".join(CHAINS))
    parser.add_argument("--work", default="imaging", help="run directory under the cache "
                        "(results are named after it unless it is the default)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the run directory "
                        "and the simulated block live")
    parser.add_argument("--block-dir", type=Path, help="a cached simulated block (its subband "
                        "files: the reference reads them) instead of simulating one")
    parser.add_argument("--store", type=Path, help="with --block-dir: that block's ingested, "
                        "calibrated store (read only) instead of ingesting it")
    parser.add_argument("--catalog", type=Path, help="with --store: its calibrator catalogue")
    args = parser.parse_args()
    block = args.block_dir or block_without_gains(args.preset)
    work = args.cache / args.work
    name = f"imaging_{args.preset}" + ("" if args.work == "imaging" else f"_{args.work}")
    shutil.rmtree(work, ignore_errors=True)
    if args.store is not None:
        _prepare_cached(args.store, args.catalog, work)
    else:
        _prepare(block, work)
    results = {}
    for chain in args.chains.split(","):
        try:
            results[chain] = timed_chain(chain, block, work / chain)
        except RuntimeError as exc:  # one chain failing must not lose the others' results
            results[chain] = {"error": str(exc)[-2000:]}
        print(chain, json.dumps(results[chain]), flush=True)
    config = _config(work / "summary")
    summary = {"preset": args.preset, "imsize": config.imaging.imsize,
               "cell_arcsec": config.imaging.cell_arcsec, "niter": config.imaging.niter,
               "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2))
    loads = ", ".join(f"{c} {r['load_average'][0]:.1f}" for c, r in results.items()
                      if "load_average" in r)
    lines = [f"# Imaging, {args.preset} block ({config.imaging.imsize} px x "
             f"{config.imaging.cell_arcsec}\", niter {config.imaging.niter})", "",
             f"CPU seconds: the chain's whole process tree. Load average (1 min) at the end "
             f"of each chain: {loads}.", "",
             "| chain | CPU s | seconds | peak memory GiB | notes |", "|---|---|---|---|---|"]
    for chain, r in results.items():
        if "error" in r:
            lines.append(f"| {chain} | failed | | | {r['error'][-200:]!r} |")
        elif chain.startswith("export_"):
            detail = (f"write {r['write_s']:.0f} s + mstransform {r['mstransform_s']:.0f} s"
                      if "mstransform_s" in r else "averaged by the writer")
            lines.append(f"| {chain} | {r['cpu_s']:.0f} | {r['total']:.0f} | "
                         f"{r['peak_rss_gib']:.1f} | {detail} |")
        elif chain == "reference":
            lines.append(f"| reference: pyuvdata MS conversion | {r['conversion_cpu_s']:.0f} | "
                         f"{sum(r['conversion'].values()):.0f} | | read+combine+phase+write |")
            lines.append(f"| reference: tclean dirty (niter 0) | {r['tclean_dirty_cpu_s']:.0f} "
                         f"| {r['tclean_dirty']:.0f} | | |")
            lines.append(f"| reference: tclean niter {config.imaging.niter} | "
                         f"{r['tclean_cpu_s']:.0f} | {r['tclean']:.0f} | "
                         f"{r['peak_rss_gib']:.1f} | 768 channels; chain total {r['cpu_s']:.0f} "
                         "CPU s |")
        else:
            lines.append(f"| {chain}: image stage | {r['cpu_s']:.0f} | {r['total']:.0f} | "
                         f"{r['peak_rss_gib']:.1f} | CPU: stage process {r['cpu_own_s']:.0f} "
                         f"s, engine and writer processes {r['cpu_children_s']:.0f} s; "
                         f"export {r['export_s']:.0f} s, engine "
                         f"{r['engine_s']:.0f} s, products {r['products_s']:.0f} s; "
                         f"{r['deconvolver']}, w-planes {r.get('wprojplanes')}, noise "
                         f"{1e3 * r['noise_jy']:.2f} mJy/beam, DR {r['dynamic_range']:.0f}, "
                         f"deepest negative {r['deepest_negative_sigma']:.1f} sigma, beam "
                         f"{r['beam_major_arcsec']:.1f}\" x {r['beam_minor_arcsec']:.1f}\"; "
                         f"MS rows per window {r['rows_per_window']} of "
                         f"{r['rows_per_window_recorded']} recorded |")
    lines += _source_table(results)
    write_report(RESULTS / f"{name}.md", lines)


def _source_table(results: dict) -> list[str]:
    """The PB-corrected peaks of the same true sources in every image chain, and the ratio
    with / without time averaging for each engine run both ways."""
    chains = [c for c, r in results.items() if "sources" in r]
    if not chains:
        return []
    peaks = {c: {s["name"]: s for s in results[c]["sources"]} for c in chains}
    pairs = [(c, f"{c}_bda") for c in chains if f"{c}_bda" in peaks]
    names = sorted(set.intersection(*(set(p) for p in peaks.values())),
                   key=lambda n: -abs(peaks[chains[0]][n]["east_deg"]))
    lines = ["", "PB-corrected peaks (Jy/beam) of the true sources above 0.3 Jy within 1.9 deg:",
             "", "| source | east deg | north deg | " + " | ".join(chains)
             + "".join(f" | {b} / {a}" for a, b in pairs) + " |",
             "|---|---|---|" + "---|" * (len(chains) + len(pairs))]
    for n in names:
        first = peaks[chains[0]][n]
        lines.append(f"| {n} | {first['east_deg']:+.2f} | {first['north_deg']:+.2f} | "
                     + " | ".join(f"{peaks[c][n]['peak_jy']:.4f}" for c in chains)
                     + "".join(f" | {peaks[b][n]['peak_jy'] / peaks[a][n]['peak_jy']:.4f}"
                               for a, b in pairs) + " |")
    return lines


if __name__ == "__main__":
    chain_or_main(CHAINS, main)
