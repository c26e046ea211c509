"""Calibrate the variability candidate thresholds by simulation.

For 10, 30, 100 and 365 daily epochs, constant sources with realistic errors
(contimg_dask.testing.lightcurves.constant_sources: S/N 5-500, epoch noise varying by 20 %,
a 1 % residual scale error included in the stated errors) give the distribution of each
statistic under the null hypothesis; the thresholds are its upper quantiles:

- η (weighted reduced χ²) and the two-epoch max |Vs| (consecutive pairs): each at a
  false-positive rate of 4e-4 per source, so that the union of the two with the ESE search
  stays below 1e-3 per source;
- the ESE matched-dip statistic z: at 1e-4 per source (<= 1 false candidate per 10^4
  source-years at 365 epochs).

A second, independent simulation then measures the false-positive rate of each threshold and
of the union (the candidate rule of contimg_dask.photometry.candidates without its
magnitude cuts, i.e. conservatively). Writes benchmarks/results/variability_thresholds.json
and .md.

    python -m benchmarks.variability_thresholds [--sources 200000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from contimg_dask.ops.variability import dip_search, metrics, sums_from_lightcurves
from contimg_dask.testing.lightcurves import constant_sources

EPOCHS = (10, 30, 100, 365)
RATE_PAIRWISE, RATE_ESE = 4e-4, 1e-4
WIDTHS_DAYS = np.array([14, 21, 30, 45, 60, 90, 120, 180], float)
RESULTS = Path(__file__).parent / "results"


def statistics(n_sources: int, n_epochs: int, seed: int) -> dict[str, np.ndarray]:
    """η, max |Vs| and ESE z of ``n_sources`` simulated constant sources."""
    out: dict[str, list[np.ndarray]] = {"eta": [], "vs": [], "ese_z": []}
    rng = np.random.default_rng(seed)
    for lo in range(0, n_sources, 50_000):
        mjd, flux, err, _ = constant_sources(min(50_000, n_sources - lo), n_epochs, rng)
        m = metrics(sums_from_lightcurves(mjd, flux, err, m_min=0.0))
        out["eta"].append(m["eta"])
        out["vs"].append(m["vs_max"])
        out["ese_z"].append(dip_search(mjd, flux, err, WIDTHS_DAYS)["ese_z"])
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--sources", type=int, default=200_000)
    args = parser.parse_args()
    table = {"epochs": list(EPOCHS), "eta": [], "vs": [], "ese_z": [], "measured": []}
    t0 = time.perf_counter()
    for n_epochs in EPOCHS:
        calib = statistics(args.sources, n_epochs, seed=n_epochs)
        thresholds = {"eta": float(np.quantile(calib["eta"], 1 - RATE_PAIRWISE)),
                      "vs": float(np.quantile(calib["vs"], 1 - RATE_PAIRWISE)),
                      "ese_z": float(np.quantile(calib["ese_z"], 1 - RATE_ESE))}
        check = statistics(args.sources, n_epochs, seed=10_000 + n_epochs)
        hits = {k: check[k] >= thresholds[k] for k in thresholds}
        union = hits["eta"] | hits["vs"] | hits["ese_z"]
        for k, v in thresholds.items():
            table[k].append(round(v, 3))
        table["measured"].append({"epochs": n_epochs, "sources": args.sources,
                                  **{f"fpr_{k}": float(v.mean()) for k, v in hits.items()},
                                  "fpr_union": float(union.mean())})
        print(n_epochs, thresholds, table["measured"][-1], flush=True)
    table["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "variability_thresholds.json").write_text(json.dumps(table, indent=2) + "\n")
    lines = ["| epochs | η | max \\|Vs\\| | ESE z | measured FPR η | Vs | ESE | union |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, m in enumerate(table["measured"]):
        lines.append(f"| {m['epochs']} | {table['eta'][k]} | {table['vs'][k]} | "
                     f"{table['ese_z'][k]} | {m['fpr_eta']:.1e} | {m['fpr_vs']:.1e} | "
                     f"{m['fpr_ese_z']:.1e} | {m['fpr_union']:.1e} |")
    (RESULTS / "variability_thresholds.md").write_text(
        f"Calibrated on {args.sources} simulated constant sources per epoch count, checked on "
        f"as many independent ones ({table['seconds']:.0f} s).\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
