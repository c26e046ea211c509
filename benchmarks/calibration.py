"""Calibration side by side: our solve and apply vs CASA bandpass + gaincal and applycal.

    python -m benchmarks.calibration [--preset full]

On the cached simulated block (its calibrator SIMCAL, 20 Jy, transits the middle): ingest,
flag (ours), then, timed in the same run on the same data:

- solve: ours (``solve_block``: model, bandpass, 60 s and whole-block gains) vs CASA
  ``bandpass`` + ``gaincal`` (solint inf) on the exported MS with our model in MODEL_DATA;
- apply: ours on the fly (the default: gains on the block's grid, the corrected data
  computed by readers; the MS export's CORRECTED_DATA share is timed too) and materialised
  (the corrected group written to zarr) vs CASA ``applycal`` of the same solutions exported
  as tables (reads the MS, writes CORRECTED_DATA); our apply kernel against a plain NumPy
  multiply over the same arrays in memory; and zarr reading and writing the arrays a
  materialising apply reads and writes.

Also reports how the two solutions agree (G x B, reference antenna's phase removed) and how
ours matches the simulator's truth. JSON and markdown in ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.run import RESULTS, prepare


def _catalog(block: Path, out: Path) -> Path:
    """A calibrator catalogue holding the simulated calibrator (SIMCAL is not a real one)."""
    from contimg_dask.science.skymodel import PointSource, write_catalog
    from tests.helpers import read_truth

    truth = read_truth(next(block.glob("*_truth.h5")))
    cal = next(s for s in truth["sources"] if s["name"] == "SIMCAL")
    write_catalog([PointSource(cal["name"], cal["ra_deg"], cal["dec_deg"], cal["flux_jy"],
                               cal["ref_freq_hz"], cal["spectral_index"])], out)
    return out


def _product(gain: np.ndarray, bandpass: np.ndarray) -> np.ndarray:
    """G x B (antenna, frequency, pol); NaN where flagged."""
    return gain[:, None, :] * bandpass


def _casa_product(b_table: Path, g_table: Path, freq: np.ndarray, slices: list[slice]
                  ) -> np.ndarray:
    from contimg_dask.casa.caltables import bandpass_from_table, gains_from_table, read_caltable

    b, g = read_caltable(b_table), read_caltable(g_table)
    bandpass, flags = bandpass_from_table(b, freq)
    out = np.empty_like(bandpass)
    for spw, sl in enumerate(slices):
        _, gains, g_flags = gains_from_table(g, spw=spw)
        out[:, sl] = gains[0][:, None, :] * bandpass[:, sl]
        flags[:, sl] |= g_flags[0][:, None, :]
    return np.where(flags, np.nan, out)


def _truth_product(block: Path, names: list[str]) -> np.ndarray:
    import h5py

    with h5py.File(next(block.glob("*_truth.h5")), "r") as f:
        time_gains, bandpass, freq = f["time_gains"][()], f["bandpass"][()], f["freq_hz"][()]
    index = [int(n) - 1 for n in names]
    return time_gains[index].mean(axis=1)[:, None, :] * bandpass[index][:, np.argsort(freq)]


def _agreement(a: np.ndarray, b: np.ndarray, refant: int, good: np.ndarray) -> dict:
    ratio = (a * np.conj(a[refant]) / np.abs(a[refant])) / (
        b * np.conj(b[refant]) / np.abs(b[refant]))
    ratio = ratio[good & np.isfinite(ratio)]
    return {"amplitude_max": float(np.nanmax(np.abs(np.abs(ratio) - 1))),
            "amplitude_median": float(np.nanmedian(np.abs(np.abs(ratio) - 1))),
            "phase_max_deg": float(np.nanmax(np.degrees(np.abs(np.angle(ratio))))),
            "phase_median_deg": float(np.nanmedian(np.degrees(np.abs(np.angle(ratio)))))}


def _kernel_and_floors(store: Path, gain_t: np.ndarray, bandpass: np.ndarray,
                       ant1: np.ndarray, ant2: np.ndarray, slices: list[slice]) -> dict:
    """In memory, one core, subband by subband: our apply kernel against a plain NumPy
    multiply of the same visibilities by per-baseline factors (outputs preallocated, pages
    touched); and on disk: zarr reading what a materialising apply reads (visibilities,
    weights, flags) and writing what it writes (visibilities, weights), no arithmetic."""
    import zarr

    from contimg_dask.ops.calibration import apply_gains

    name = next(p.name for p in store.iterdir() if (p / "VISIBILITY").is_dir())
    group = store / name
    arrays = {k: zarr.open_array(group / v, mode="r")[...] for k, v in
              (("vis", "VISIBILITY"), ("weight", "WEIGHT"), ("flag", "FLAG"))}
    factor = np.ones(arrays["vis"].shape[1:2] + arrays["vis"].shape[3:], np.complex64)
    out = np.zeros_like(arrays["vis"])
    apply_gains(arrays["vis"][:1, :, :1], arrays["weight"][:1, :, :1],
                arrays["flag"][:1, :, :1], gain_t[:1], bandpass[:1], ant1, ant2)  # compile
    t0 = time.perf_counter()
    for sl in slices:
        np.multiply(arrays["vis"][:, :, sl], factor[None, :, None, :], out=out[:, :, sl])
    numpy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for sl in slices:
        apply_gains(arrays["vis"][:, :, sl], arrays["weight"][:, :, sl],
                    arrays["flag"][:, :, sl], gain_t, bandpass[sl], ant1, ant2)
    kernel_s = time.perf_counter() - t0
    del out
    floor_store = store.with_name("floor.zarr")
    t0 = time.perf_counter()
    zarr.open_array(group / "FLAG", mode="r")[...]
    for source in ("VISIBILITY", "WEIGHT"):
        src = zarr.open_array(group / source, mode="r")
        dst = zarr.create_array(floor_store / source, shape=src.shape, dtype=src.dtype,
                                chunks=src.chunks, compressors=src.compressors,
                                overwrite=True, config={"write_empty_chunks": True})
        dst[...] = src[...]
    zarr_s = time.perf_counter() - t0
    shutil.rmtree(floor_store)
    return {"numpy_multiply_s": numpy_s, "apply_kernel_s": kernel_s,
            "zarr_read_write_s": zarr_s, "bytes_vis": int(arrays["vis"].nbytes)}


def main() -> None:
    from contimg_dask.casa import run_casa
    from contimg_dask.config import load_config
    from contimg_dask.io.ingest import ingest_block
    from contimg_dask.io.outputs.exports import export_block
    from contimg_dask.io.store.block_calibration import corrected_dataset, read_block_calibration
    from contimg_dask.io.store.block_store import block_node, open_block
    from contimg_dask.io.store.block_view import read_geometry
    from contimg_dask.io.store.solutions import read_solutions
    from contimg_dask.pipeline.cluster import dask_client
    from contimg_dask.processing.calibrate_apply import apply_solutions
    from contimg_dask.processing.calibrate_solve import solve_block
    from contimg_dask.processing.calibration_tables import export_to_casa
    from contimg_dask.processing.flag import flag_block
    from contimg_dask.testing.calibration_model import model_visibilities, write_model_column
    from contimg_dask.testing.casa_tasks import apply_tables, solve_bandpass_and_gains
    from tests.helpers import read_truth

    args, block, work = prepare(__doc__, "calibration")
    catalog = _catalog(block, work / "calibrators.csv")
    config = load_config(environment="testing", overrides={
        "paths.root": str(work), "calibration.catalog": str(catalog)})
    truth = read_truth(next(block.glob("*_truth.h5")))
    files = [block / truth["files"][str(sb)] for sb in range(16)]
    timings: dict[str, float] = {}
    with dask_client(config.dask):
        store = ingest_block(files, work / "block.zarr", config)
        flag_block(store, config.flagging)
        geometry = read_geometry(store)
        n_vis = len(geometry.times_unix) * len(geometry.ant1) * len(geometry.freq_hz) * len(
            geometry.polarizations)
        ms = export_block(store, work / "block.ms", "ms", config)
        model = model_visibilities(store, config)
        slices = geometry.subband_slices()
        write_model_column(ms, lambda s: model[:, :, slices[s]].compute())
        def timed(name: str, step: Callable[[], object]) -> None:
            t0 = time.perf_counter()
            step()
            timings[name] = time.perf_counter() - t0

        timed("ours_solve", lambda: solve_block(store, config, work / "solutions.zarr"))
        timed("ms_export_uncalibrated",
              lambda: export_block(store, work / "plain.ms", "ms", config))
        shutil.rmtree(work / "plain.ms")
        timed("ours_apply_on_the_fly", lambda: apply_solutions(
            store, work / "solutions.zarr", config, materialise=False))
        timed("on_the_fly_read_all",
              lambda: corrected_dataset(store).VISIBILITY_CORRECTED.data.sum().compute())
        timed("ms_export_with_corrected",
              lambda: export_block(store, work / "calibrated.ms", "ms", config))
        shutil.rmtree(work / "calibrated.ms")
        timed("ours_apply_materialised", lambda: apply_solutions(
            store, work / "solutions.zarr", config, materialise=True))
    solutions = read_solutions(work / "solutions.zarr")
    refant_name = solutions.attrs["contimg"]["refant"]
    refant = geometry.antenna_names.index(refant_name)
    casa_solve = run_casa(config, solve_bandpass_and_gains, str(ms), str(work / "casa.B"),
                          str(work / "casa.G"), refant_name, "inf", 5.0)
    timings["casa_bandpass"] = casa_solve["bandpass_s"]
    timings["casa_gaincal"] = casa_solve["gaincal_s"]
    tables = export_to_casa(work / "solutions.zarr", ms, work / "ours", config)
    casa_apply = run_casa(config, apply_tables, str(ms), [str(t) for t in tables],
                          ["nearestflag", "linear"])
    timings["casa_applycal"] = casa_apply["applycal_s"]
    calibration = read_block_calibration(block_node(open_block(store)))
    floors = _kernel_and_floors(store, calibration.gain_t, calibration.bandpass,
                                geometry.ant1, geometry.ant2, slices)
    ours = _product(solutions.GAIN_BLOCK.values, solutions.BANDPASS.values)
    casa = _casa_product(work / "casa.B", work / "casa.G", geometry.freq_hz, slices)
    good = ~solutions.BANDPASS_FLAG.values
    agreement_counts = {"solutions": int(good.size), "ours_flagged": int((~good).sum()),
                        "casa_flagged": int((~np.isfinite(casa)).sum())}
    agreement = {"ours_vs_casa": _agreement(ours, casa, refant, good),
                 "ours_vs_truth": _agreement(ours, _truth_product(block,
                                                                  geometry.antenna_names),
                                             refant, good), "counts": agreement_counts}
    summary = {"preset": args.preset, "visibilities": n_vis, "timings_s": timings,
               "floors": floors, "agreement": agreement,
               "quality": solutions.attrs["contimg"]["quality"],
               "ratios": {
                   "casa_solve_over_ours": (timings["casa_bandpass"] + timings["casa_gaincal"])
                   / timings["ours_solve"],
                   "casa_applycal_over_ours_on_the_fly": timings["casa_applycal"]
                   / timings["ours_apply_on_the_fly"],
                   "casa_applycal_over_ours_materialised": timings["casa_applycal"]
                   / timings["ours_apply_materialised"],
                   "casa_applycal_over_ms_corrected_marginal": timings["casa_applycal"]
                   / max(timings["ms_export_with_corrected"]
                         - timings["ms_export_uncalibrated"], 1e-9),
                   "kernel_over_numpy": floors["apply_kernel_s"] / floors["numpy_multiply_s"]},
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"calibration_{args.preset}.json").write_text(json.dumps(summary, indent=2))
    gb = floors["bytes_vis"] / 1e9
    marginal = timings["ms_export_with_corrected"] - timings["ms_export_uncalibrated"]
    rows = [("ours: solve (model, bandpass, gains)", timings["ours_solve"]),
            ("CASA: bandpass", timings["casa_bandpass"]),
            ("CASA: gaincal", timings["casa_gaincal"]),
            ("CASA: bandpass + gaincal", timings["casa_bandpass"] + timings["casa_gaincal"]),
            ("ours: apply, on the fly (gains on the block's grid; the default)",
             timings["ours_apply_on_the_fly"]),
            ("ours: every corrected visibility computed on the fly from the store (a Dask "
             "graph, summed)", timings["on_the_fly_read_all"]),
            ("ours: apply, materialised (corrected group written to zarr)",
             timings["ours_apply_materialised"]),
            ("ours: MS export, uncalibrated (DATA)", timings["ms_export_uncalibrated"]),
            ("ours: MS export with CORRECTED_DATA computed on the fly",
             timings["ms_export_with_corrected"]),
            ("ours: CORRECTED_DATA's share of the MS export", marginal),
            ("CASA: applycal (MS in, CORRECTED_DATA out)", timings["casa_applycal"]),
            ("ours: apply kernel in memory, one core", floors["apply_kernel_s"]),
            ("floor: NumPy multiply in memory, one core", floors["numpy_multiply_s"]),
            ("floor: zarr read (vis, weight, flag) + write (vis, weight)",
             floors["zarr_read_write_s"])]
    lines = [f"# Calibration side by side ({args.preset} block, {n_vis / 1e6:.1f} M "
             f"visibilities, {gb:.2f} GB of visibilities, {summary['date']})", "",
             "| step | seconds | M vis/s | GB/s of visibilities |", "| --- | ---: | ---: | ---: |"]
    for label, seconds in rows:
        lines.append(f"| {label} | {seconds:.2f} | {n_vis / seconds / 1e6:.1f} | "
                     f"{gb / seconds:.2f} |")
    r = summary["ratios"]
    a = agreement
    lines += ["", f"- CASA solve / ours: {r['casa_solve_over_ours']:.1f} (target > 1)",
              f"- CASA applycal / ours apply on the fly: "
              f"{r['casa_applycal_over_ours_on_the_fly']:.1f} (target >= 5); materialised: "
              f"{r['casa_applycal_over_ours_materialised']:.1f}; CASA applycal / the "
              f"CORRECTED_DATA share of our MS export: "
              f"{r['casa_applycal_over_ms_corrected_marginal']:.1f}",
              f"- apply kernel / NumPy multiply (in memory): {r['kernel_over_numpy']:.2f}",
              f"- ours vs CASA, G x B: amplitude max {100 * a['ours_vs_casa']['amplitude_max']:.2f}"
              f" % (median {100 * a['ours_vs_casa']['amplitude_median']:.3f} %), phase max "
              f"{a['ours_vs_casa']['phase_max_deg']:.2f} deg (median "
              f"{a['ours_vs_casa']['phase_median_deg']:.3f})",
              f"- ours vs truth, G x B: amplitude max "
              f"{100 * a['ours_vs_truth']['amplitude_max']:.2f} % (median "
              f"{100 * a['ours_vs_truth']['amplitude_median']:.3f} %), phase max "
              f"{a['ours_vs_truth']['phase_max_deg']:.2f} deg (median "
              f"{a['ours_vs_truth']['phase_median_deg']:.3f})"]
    (RESULTS / f"calibration_{args.preset}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
