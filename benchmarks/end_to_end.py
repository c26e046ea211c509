"""One block end to end, side by side: the orchestrator against the reference chain.

    python -m benchmarks.end_to_end [--preset full]

On the cached simulated block (its calibrator SIMCAL, 20 Jy, transits the middle), each
chain in its own process (peak memory of the process tree sampled):

- ``ours``: ``Pipeline.process_block`` with the calibrator recipe (ingest, flag, solve,
  apply, image, then photometry and the rest once registered) on a LocalCluster of the
  configured size started before the clock, the state in SQLite; seconds per stage from the
  state store and the block's latency (first file registered to last stage done);
- ``reference``: pyuvdata reads, combines, phases and writes the Measurement Set
  (benchmarks/chains.py), then CASA: ``flagdata`` (tfcrop), ``ft`` of the calibrator,
  ``bandpass`` + ``gaincal``, ``applycal`` and ``tclean`` with the same image parameters
  (size, cell, weighting, gridder, deconvolver, niter) as ours.

Reports seconds per step, the ratio reference / ours, blocks per hour against the
telescope's 309 s cadence, as JSON and markdown in ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from benchmarks.chains import chain_or_main, write_report
from benchmarks.run import RESULTS, prepare, run_chain

CADENCE_S = 309.0
RECIPE = ["ingest", "flag", "calibrate_solve", "calibrate_apply", "image", "mosaic",
          "photometry"]


#: Image grid per preset where the configured one (1800 x 8", for the full array's beam) does
#: not fit: the `small` preset's 12 antennas make a beam of several arcminutes (cli/demo.py).
GRIDS = {"small": {"imaging.imsize": 512, "imaging.cell_arcsec": 10.0}}


def _config(work: Path):
    from contimg_dask.config import load_config

    preset = (work.parent / "preset").read_text().strip()
    return load_config(environment="testing", overrides={**GRIDS.get(preset, {}),
        "paths.root": str(work), "calibration.catalog": str(work.parent / "calibrators.csv"),
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


def ours(block_dir: Path, work: Path) -> dict:
    from benchmarks.chains import warm_inputs
    from contimg_dask.io.store.block_view import fixed_centre_group
    from contimg_dask.pipeline import Pipeline
    from contimg_dask.pipeline.cluster import dask_client

    config = _config(work)
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
            "noise_jy": image["noise_jy"], "dynamic_range": image["dynamic_range"]}


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
    timed("tclean", tclean_to_fits, ms, str(work / "tclean"), params, "corrected", 1,
          config.imaging.threshold_sigma, config.imaging.niter, config.imaging.threads)
    out["total"] = time.perf_counter() - t_all
    return out


CHAINS = {"ours": ours, "reference": reference}


def main() -> None:
    from benchmarks.calibration import _catalog

    args, block, work = prepare(__doc__, "end_to_end")
    _catalog(block, work / "calibrators.csv")
    (work / "preset").write_text(args.preset)
    results = {"ours": run_chain("ours", block, work / "ours", "benchmarks.end_to_end")}
    results["reference"] = run_chain("reference", block, work / "reference",
                                     "benchmarks.end_to_end")
    shutil.rmtree(work, ignore_errors=True)
    ours_s, ref_s = results["ours"]["total"], results["reference"]["total"]
    summary = {
        "preset": args.preset, "chains": results,
        "ratios": {"reference_over_ours": ref_s / ours_s,
                   "ours_over_cadence": ours_s / CADENCE_S,
                   "reference_over_cadence": ref_s / CADENCE_S},
        "blocks_per_hour": {"ours": 3600 / ours_s, "reference": 3600 / ref_s,
                            "telescope": 3600 / CADENCE_S},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"end_to_end_{args.preset}.json").write_text(json.dumps(summary, indent=2))
    ref = results["reference"]
    lines = [f"# One block end to end ({args.preset}, {summary['date']})", "",
             "| chain | step | seconds |", "| --- | --- | ---: |"]
    lines += [f"| ours | {name} | {sec:.1f} |"
              for name, sec in results["ours"]["stages"].items()]
    lines += [f"| ours | **total** (process_block) | **{ours_s:.1f}** |"]
    lines += [f"| reference | pyuvdata {name} | {sec:.1f} |"
              for name, sec in ref["conversion"].items() if isinstance(sec, float)]
    lines += [f"| reference | CASA {name} | {ref[name]:.1f} |" for name in (
        "flagdata_tfcrop", "ft_model", "bandpass_gaincal", "applycal", "tclean")]
    lines += [f"| reference | **total** | **{ref_s:.1f}** |", "",
              f"- reference / ours: {summary['ratios']['reference_over_ours']:.2f}",
              f"- ours: {summary['blocks_per_hour']['ours']:.1f} blocks/h, reference "
              f"{summary['blocks_per_hour']['reference']:.1f}, the telescope writes "
              f"{summary['blocks_per_hour']['telescope']:.1f} (one per {CADENCE_S:.0f} s)",
              f"- peak memory: ours {results['ours']['peak_rss_gib']:.2f} GiB, reference "
              f"{ref['peak_rss_gib']:.2f} GiB"]
    write_report(RESULTS / f"end_to_end_{args.preset}.md", lines)


if __name__ == "__main__":
    chain_or_main(CHAINS, main)
