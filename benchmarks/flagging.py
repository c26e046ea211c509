"""Flagging side by side: ours vs CASA flagdata (tfcrop, rflag) vs AOFlagger, on one block.

    python -m benchmarks.flagging [--preset full]

Each flagger starts from the ingest flags of the same simulated block (with narrowband,
burst and bad-antenna RFI) and is scored against the simulator's truth on the
cross-correlations: recall of visibilities whose RFI exceeds 5 sigma of the noise, and the
fraction of clean visibilities flagged. Reports seconds, visibilities/s, recall and false-flag
rate as JSON and markdown in ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.run import RESULTS, prepare

SIGMA_CUT = 5.0


def _truth(block: Path, store: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    from tests.helpers import read_truth, rfi_truth

    truth_path = next(block.glob("*_truth.h5"))
    return rfi_truth(store, truth_path, shape), read_truth(truth_path)["noise_sigma_jy"]


def _score(flags: np.ndarray, rfi: np.ndarray, sigma: float, cross: np.ndarray) -> dict:
    f, r = flags[:, cross], rfi[:, cross]
    strong, clean = r > SIGMA_CUT * sigma, r == 0
    return {"recall": float(f[strong].mean()), "false_flag_rate": float(f[clean].mean()),
            "flagged": float(f.mean())}


def _ms_flags(ms: Path, shape: tuple[int, ...], n_spw: int) -> np.ndarray:
    from casacore.tables import table

    n_t, n_bl, n_f, n_p = shape
    with table(str(ms), ack=False) as tab:
        flags = tab.getcol("FLAG")  # rows: spw, time, baseline (our writer's order)
    n_chan = n_f // n_spw
    return (flags.reshape(n_spw, n_t, n_bl, n_chan, n_p).transpose(1, 2, 0, 3, 4)
            .reshape(n_t, n_bl, n_f, n_p))


def _aoflagger(vis: np.ndarray, flags_in: np.ndarray, cross: np.ndarray) -> np.ndarray:
    import aoflagger

    n_t, _, n_f, n_p = vis.shape
    flagger = aoflagger.AOFlagger()
    strategy = flagger.load_strategy_file(
        flagger.find_strategy_file(aoflagger.TelescopeId.Generic))
    images = flagger.make_image_set(n_t, n_f, 2 * n_p)
    out = flags_in.copy()
    for b in np.flatnonzero(cross):
        for p in range(n_p):
            images.set_image_buffer(2 * p, np.ascontiguousarray(vis[:, b, :, p].real.T))
            images.set_image_buffer(2 * p + 1, np.ascontiguousarray(vis[:, b, :, p].imag.T))
        result = np.asarray(strategy.run(images).get_buffer()).T  # (time, frequency)
        out[:, b] |= result[:, :, None].astype(bool)
    return out


def main() -> None:
    from contimg_dask.casa import run_casa
    from contimg_dask.casa.tasks import flagdata_timed
    from contimg_dask.config import load_config
    from contimg_dask.io.block_store import block_node, open_block
    from contimg_dask.io.exports import export_block
    from contimg_dask.io.ingest import ingest_block
    from contimg_dask.pipeline.cluster import dask_client
    from contimg_dask.pipeline.flag import flag_block
    from tests.helpers import read_truth

    args, block, work = prepare(__doc__, "flagging")
    config = load_config(environment="testing", overrides={"paths.root": str(work)})
    truth = read_truth(next(block.glob("*_truth.h5")))
    files = [block / truth["files"][str(sb)] for sb in range(16)]
    results = {}
    with dask_client(config.dask):
        store = ingest_block(files, work / "block.zarr", config)
        ds = block_node(open_block(store)).to_dataset(inherit=False)
        shape = ds.VISIBILITY.shape
        cross = (ds.baseline_antenna1_name != ds.baseline_antenna2_name).values
        rfi, sigma = _truth(block, store, shape)
        n_vis = int(np.prod(shape))
        export_block(store, work / "ingest.ms", "ms", config)  # before our flags
        t0 = time.perf_counter()
        flag_block(store, config.flagging)
        seconds = time.perf_counter() - t0
        ds = block_node(open_block(store)).to_dataset(inherit=False)
        results["ours"] = {"seconds": seconds, **_score(
            ds[ds.attrs["data_groups"]["base"]["flag"]].values, rfi, sigma, cross)}
    vis, ingest_flags = ds.VISIBILITY.values, ds.FLAG.values
    t0 = time.perf_counter()
    ao = _aoflagger(vis, ingest_flags, cross)
    results["aoflagger_generic"] = {"seconds": time.perf_counter() - t0,
                                    **_score(ao, rfi, sigma, cross)}
    del ao
    n_spw = len(ds.attrs["contimg"]["subbands"])
    for mode in ("tfcrop", "rflag"):
        ms = work / f"{mode}.ms"
        shutil.copytree(work / "ingest.ms", ms)
        timing = run_casa(config, flagdata_timed, str(ms), mode)
        results[f"casa_{mode}"] = {"seconds": timing["seconds"],
                                   **_score(_ms_flags(ms, shape, n_spw), rfi, sigma, cross)}
        shutil.rmtree(ms)
    for r in results.values():
        r["mvis_per_s"] = n_vis / r["seconds"] / 1e6
    summary = {"preset": args.preset, "visibilities": n_vis, "sigma_jy": sigma,
               "strong_rfi_threshold": f"{SIGMA_CUT} sigma", "results": results,
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"flagging_{args.preset}.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# Flagging side by side ({args.preset} block, {n_vis / 1e6:.1f} M visibilities, "
             f"{summary['date']})", "",
             "| flagger | seconds | M vis/s | recall (RFI > 5 sigma) | false-flag rate | "
             "flagged |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['mvis_per_s']:.1f} | "
                     f"{100 * r['recall']:.2f} % | {100 * r['false_flag_rate']:.2f} % | "
                     f"{100 * r['flagged']:.2f} % |")
    (RESULTS / f"flagging_{args.preset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
