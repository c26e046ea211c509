"""One block end to end, side by side: the orchestrator against the reference chain.

    python -m benchmarks.end_to_end [--preset full]

On the cached simulated block (its calibrator SIMCAL, 20 Jy, transits the middle), each
chain in its own process (peak memory of the process tree sampled):

- ``ours``: ``Pipeline.process_block`` with the calibrator recipe (ingest, flag, solve,
  apply, image, then photometry and the rest once registered) on a LocalCluster of the
  configured size started before the clock, the state in SQLite; seconds per stage from the
  state store and the block's latency (first file registered to last stage done); the
  configured engine (tclean, one thread);
- ``ours_wsclean``: the same with ``imaging.engine: wsclean`` and ``imaging.threads: 2``
  (one block on this 2-core machine: the engine may use both cores);
- ``reference``: pyuvdata reads, combines, phases and writes the Measurement Set
  (benchmarks/chains.py), then CASA: ``flagdata`` (tfcrop), ``ft`` of the calibrator,
  ``bandpass`` + ``gaincal``, ``applycal`` and ``tclean`` with the same image parameters
  (size, cell, weighting, gridder, deconvolver, niter) as ours.

Reports seconds per step, CPU seconds per chain (the figure a loaded machine does not
inflate), the ratio reference / ours, blocks per hour against the telescope's 309 s cadence,
as JSON and markdown in ``benchmarks/results/``. ``--chains`` runs a subset (the reference
needs one of ours first: it images with the calibrator, centre and deconvolver ours found).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from benchmarks.chains import chain_or_main, truth_photometry_catalog, write_report
from benchmarks.run import RESULTS, prepare, run_chain

CADENCE_S = 309.0
RECIPE = ["ingest", "flag", "calibrate_solve", "calibrate_apply", "image", "mosaic",
          "photometry"]


#: Image grid per preset where the configured one (1800 x 8", for the full array's beam) does
#: not fit: the `small` preset's 12 antennas make a beam of several arcminutes (cli/demo.py).
GRIDS = {"small": {"imaging.imsize": 512, "imaging.cell_arcsec": 10.0}}


#: Configuration each of our chains runs with, beyond the benchmark's own.
ENGINES = {"ours": {}, "ours_wsclean": {"imaging.engine": "wsclean", "imaging.threads": 2}}


def _config(work: Path, overrides: dict | None = None):
    from contimg_dask.config import load_config

    preset = (work.parent / "preset").read_text().strip()
    return load_config(environment="testing", overrides={**GRIDS.get(preset, {}),
        **(overrides or {}),
        "paths.root": str(work), "calibration.catalog": str(work.parent / "calibrators.csv"),
        "photometry.catalog": str(work.parent / "photometry.csv"),
        "casa.task_timeout_s": 7200.0, "state.url": f"sqlite:///{work / 'state.sqlite'}",
        "pipeline.recipes.calibrator": [{"stage": s} for s in RECIPE],
        "pipeline.recipes.target": [{"stage": s} for s in RECIPE if s != "calibrate_solve"]})


def _block_ref(block_dir: Path, config):
    from contimg_dask.stages.contract import BlockRef
    from contimg_dask.stages.layout import block_slug
    from tests.helpers import read_truth

    truth = read_truth(next(block_dir.glob("*_truth.h5")))
    files = tuple(block_dir / truth["files"][str(sb)] for sb in range(16))
    block_id = truth["block_id"]
    return BlockRef(block_id, config.paths.resolved().stores / f"{block_slug(block_id)}.zarr",
                    files)


def ours(block_dir: Path, work: Path, chain: str = "ours") -> dict:
    from benchmarks.chains import warm_inputs
    from contimg_dask.io.store.block_view import fixed_centre_group
    from contimg_dask.pipeline import Pipeline
    from contimg_dask.pipeline.cluster import dask_client

    config = _config(work, ENGINES[chain])
    block = _block_ref(block_dir, config)
    with dask_client(config.dask) as client, Pipeline(config, client=client) as pipeline:
        warm_inputs(list(block.files))
        t0 = time.perf_counter()
        outcome = pipeline.process_block(block)
        total = time.perf_counter() - t0
        results = {s.stage: s.result for s in pipeline.state.stages(block.block_id)}
    if outcome.outcome != "done":
        raise RuntimeError(f"block not done: {outcome.to_dict()}")
    view = fixed_centre_group(block.store, "rephased")
    image = results["image"]["figures"]
    (work.parent / "shared.json").write_text(json.dumps({
        "centre_rad": [view.ra_rad, view.dec_rad], "deconvolver": image["deconvolver"],
        "reffreq_hz": image["reference_frequency_hz"],
        "refant": results["calibrate_solve"]["figures"]["refant"]}))
    return {"total": total, "latency_s": outcome.latency_s, "kind": outcome.kind,
            "stages": {name: r["seconds"] for name, r in results.items()},
            "engine": config.imaging.engine, "threads": config.imaging.threads,
            "noise_jy": image["noise_jy"], "dynamic_range": image["dynamic_range"]}


def ours_wsclean(block_dir: Path, work: Path) -> dict:
    """``ours`` with WSClean on both cores (``ENGINES``)."""
    return ours(block_dir, work, "ours_wsclean")


def reference(block_dir: Path, work: Path) -> dict:
    import numpy as np

    from benchmarks import chains
    from benchmarks.flagging import flagdata_cpu_timed
    from contimg_dask.casa import run_casa
    from contimg_dask.casa.imaging import tclean_to_fits
    from contimg_dask.imaging.engines import tclean_parameters
    from contimg_dask.testing.casa_tasks import (
        apply_tables,
        ft_point_source,
        solve_bandpass_and_gains,
    )
    from tests.helpers import read_truth

    config = _config(work)
    shared = json.loads((work.parent / "shared.json").read_text())
    (work / "centre.json").write_text(json.dumps(shared["centre_rad"]))
    cal = next(s for s in read_truth(next(block_dir.glob("*_truth.h5")))["sources"]
               if s["name"] == "SIMCAL")
    ms = str(work / "reference.ms")
    out: dict = {}
    t_all = time.perf_counter()
    out["conversion"] = chains.reference(block_dir, work)

    def timed(name: str, func, *args) -> None:
        t0 = time.perf_counter()
        run_casa(config, func, *args, stage="reference")
        out[name] = time.perf_counter() - t0

    timed("flagdata_tfcrop", flagdata_cpu_timed, ms, "tfcrop")
    timed("ft_model", ft_point_source, ms, str(work / "cal.cl"), float(np.radians(
        cal["ra_deg"])), float(np.radians(cal["dec_deg"])), cal["flux_jy"],
          cal["ref_freq_hz"], cal["spectral_index"])
    timed("bandpass_gaincal", solve_bandpass_and_gains, ms, str(work / "cal.B"),
          str(work / "cal.G"), shared["refant"], "inf", 3.0)
    timed("applycal", apply_tables, ms, [str(work / "cal.B"), str(work / "cal.G")],
          ["nearestflag", "linear"])
    params = tclean_parameters(config.imaging, shared["deconvolver"], shared["reffreq_hz"])
    (work / "tclean").mkdir()
    timed("tclean", tclean_to_fits, ms, str(work / "tclean"), params, "corrected",
          config.imaging.threshold_sigma, config.imaging.niter, config.imaging.threads)
    out["total"] = time.perf_counter() - t_all
    return out


CHAINS = {"ours": ours, "ours_wsclean": ours_wsclean, "reference": reference}


def _options(parser) -> None:
    parser.add_argument("--chains", default="ours_wsclean,ours,reference",
                        help="comma-separated chains, run in this order")
    parser.add_argument("--tag", default="", help="results named end_to_end_<preset>_<tag>")


def main() -> None:
    from benchmarks.calibration import _catalog

    args, block, work = prepare(__doc__, "end_to_end", _options)
    report = "_".join(filter(None, ["end_to_end", args.preset, args.tag]))
    _catalog(block, work / "calibrators.csv")
    truth_photometry_catalog(block, work / "photometry.csv")
    (work / "preset").write_text(args.preset)
    load = [os.getloadavg()[0]]
    results = {}
    for name in args.chains.split(","):
        results[name] = run_chain(name, block, work / name, "benchmarks.end_to_end")
        load.append(os.getloadavg()[0])
    shutil.rmtree(work, ignore_errors=True)
    ref_s = results["reference"]["total"] if "reference" in results else None
    summary = {"preset": args.preset, "chains": results,
               "load_average": {"min": min(load), "max": max(load)},
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "blocks_per_hour": {name: 3600 / r["total"] for name, r in results.items()},
               "telescope_blocks_per_hour": 3600 / CADENCE_S}
    if ref_s is not None:
        summary["reference_over"] = {name: ref_s / r["total"] for name, r in results.items()
                                     if name != "reference"}
        # CPU seconds: the ratio a loaded machine does not distort
        summary["reference_cpu_over"] = {
            name: results["reference"]["cpu_s"] / r["cpu_s"] for name, r in results.items()
            if name != "reference"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{report}.json").write_text(json.dumps(summary, indent=2))
    write_report(RESULTS / f"{report}.md", _report(summary))


def _report(summary: dict) -> list[str]:
    chains = summary["chains"]
    lines = [f"# One block end to end ({summary['preset']}, {summary['date']})", "",
             f"Load average {summary['load_average']['min']:.1f}-"
             f"{summary['load_average']['max']:.1f} over the run.", "",
             "| chain | step | seconds |", "| --- | --- | ---: |"]
    for name, result in chains.items():
        if name == "reference":
            lines += [f"| reference | pyuvdata {step} | {sec:.1f} |"
                      for step, sec in result["conversion"].items() if isinstance(sec, float)]
            lines += [f"| reference | CASA {step} | {result[step]:.1f} |" for step in (
                "flagdata_tfcrop", "ft_model", "bandpass_gaincal", "applycal", "tclean")]
        else:
            lines += [f"| {name} | {stage} | {sec:.1f} |"
                      for stage, sec in result["stages"].items()]
        lines.append(f"| {name} | **total** | **{result['total']:.1f}** |")
    lines += ["", "| chain | wall s | CPU s | peak GiB | blocks/h | reference / this, wall | "
              "reference / this, CPU |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, result in chains.items():
        ratios = [summary.get(key, {}).get(name)
                  for key in ("reference_over", "reference_cpu_over")]
        lines.append(f"| {name} | {result['total']:.1f} | {result['cpu_s']:.0f} | "
                     f"{result['peak_rss_gib']:.2f} | "
                     f"{summary['blocks_per_hour'][name]:.1f} | "
                     + " | ".join("" if r is None else f"{r:.2f}" for r in ratios) + " |")
    lines += ["", f"The telescope writes {summary['telescope_blocks_per_hour']:.1f} blocks/h "
              f"(one per {CADENCE_S:.0f} s)."]
    return lines


if __name__ == "__main__":
    chain_or_main(CHAINS, main)
