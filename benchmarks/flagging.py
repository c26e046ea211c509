"""Flagging side by side: ours vs CASA flagdata (tfcrop, rflag) vs AOFlagger, on one block.

    python -m benchmarks.flagging [--preset full]

Each flagger starts from the ingest flags of the same simulated block (with narrowband,
burst and bad-antenna RFI) and is scored against the simulator's truth on the
cross-correlations: recall of visibilities whose RFI exceeds 5 sigma of the noise (overall,
on the bad antenna's baselines and elsewhere), and the fraction of clean visibilities
flagged. For ours it also reports the peak memory of each Dask worker during ``flag_block``
above its idle level, in subband chunks, and the CPU time of the kernel on one subband chunk.
Reports seconds, visibilities/s, recall and false-flag rate as JSON and markdown in
``benchmarks/results/``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.run import RESULTS, ROOT, prepare

SIGMA_CUT = 5.0
# AOFlagger: the generic strategy (AOFlagger's choice for an unknown telescope, and what
# DSA-110 runs) and, of the bundled L-band interferometer strategies, the one with the fewest
# false flags on this data (docs/flagging.md has the scan of all bundled strategies).
AOFLAGGER_STRATEGIES = ("generic-default", "atca-default")
AOFLAGGER_PROCESSES = 2  # as many as our Dask workers; CASA flagdata runs in one process
MEMORY_SAMPLE_S = 0.02
_AOFLAGGER_INPUT: dict[str, Any] = {}  # the block, shared with forked AOFlagger processes


def _bad_antenna_baselines(ds: Any, truth: dict) -> np.ndarray:
    """Baselines to the simulator's bad antennas (antenna number a is named a + 1)."""
    names = [str(a + 1) for a in truth["rfi"]["bad_antennas"]]
    return (ds.baseline_antenna1_name.isin(names) | ds.baseline_antenna2_name.isin(names)).values


def _score(flags: np.ndarray, rfi: np.ndarray, sigma: float, cross: np.ndarray,
           bad: np.ndarray) -> dict:
    """Recall of RFI above SIGMA_CUT sigma (overall, on bad-antenna baselines, elsewhere),
    false-flag rate on clean visibilities and flagged fraction, cross-correlations only."""
    strong, clean = rfi > SIGMA_CUT * sigma, rfi == 0
    on_bad = np.zeros(rfi.shape, bool)
    on_bad[:, bad] = True
    cross_mask = np.zeros(rfi.shape, bool)
    cross_mask[:, cross] = True
    strong &= cross_mask
    return {"recall": float(flags[strong].mean()),
            "recall_bad_antenna": float(flags[strong & on_bad].mean()),
            "recall_other": float(flags[strong & ~on_bad].mean()),
            "false_flag_rate": float(flags[clean & cross_mask].mean()),
            "flagged": float(flags[:, cross].mean())}


def _ms_flags(ms: Path, shape: tuple[int, ...], n_spw: int) -> np.ndarray:
    from casacore.tables import table

    n_t, n_bl, n_f, n_p = shape
    with table(str(ms), ack=False) as tab:
        flags = tab.getcol("FLAG")  # rows: spw, time, baseline (our writer's order)
    n_chan = n_f // n_spw
    return (flags.reshape(n_spw, n_t, n_bl, n_chan, n_p).transpose(1, 2, 0, 3, 4)
            .reshape(n_t, n_bl, n_f, n_p))


def _aoflagger_rows(rows: np.ndarray) -> np.ndarray:
    """AOFlagger on the baselines ``rows`` of the shared block: one image set per baseline,
    2 complex polarizations as 4 images (real, imaginary of XX, then of YY; AOFlagger reads a
    4-image set as XX and YY), each image (channel, time); the ingest flags of either pol as
    pre-existing flags. Returns flags (time, row, channel)."""
    import aoflagger

    vis, ingest, path = (_AOFLAGGER_INPUT[k] for k in ("vis", "flags", "strategy"))
    n_t, _, n_f, n_p = vis.shape
    flagger = aoflagger.AOFlagger()
    strategy = flagger.load_strategy_file(path)
    images = flagger.make_image_set(n_t, n_f, 2 * n_p)
    mask = flagger.make_flag_mask(n_t, n_f, False)
    out = np.empty((n_t, rows.size, n_f), bool)
    for i, b in enumerate(rows):
        for p in range(n_p):
            images.set_image_buffer(2 * p, np.ascontiguousarray(vis[:, b, :, p].real.T))
            images.set_image_buffer(2 * p + 1, np.ascontiguousarray(vis[:, b, :, p].imag.T))
        mask.set_buffer(np.ascontiguousarray(ingest[:, b].any(axis=-1).T))
        out[:, i] = np.asarray(strategy.run(images, mask).get_buffer()).T
    return out


def _aoflagger(vis: np.ndarray, ingest: np.ndarray, cross: np.ndarray,
               strategy: str) -> np.ndarray:
    """AOFlagger (bundled ``strategy``) on every cross-correlation, baselines split over
    AOFLAGGER_PROCESSES forked processes; the ingest flags kept."""
    import aoflagger

    strategies = Path(aoflagger.AOFlagger().find_strategy_file(
        aoflagger.TelescopeId.Generic)).parent
    _AOFLAGGER_INPUT.update(vis=vis, flags=ingest, strategy=str(strategies / f"{strategy}.lua"))
    parts = np.array_split(np.flatnonzero(cross), AOFLAGGER_PROCESSES)
    with multiprocessing.get_context("fork").Pool(AOFLAGGER_PROCESSES) as pool:
        results = pool.map(_aoflagger_rows, parts)
    _AOFLAGGER_INPUT.clear()
    out = ingest.copy()
    for rows, flags in zip(parts, results, strict=True):
        out[:, rows] |= flags[..., None]
    return out


def flagdata_cpu_timed(vis: str, mode: str) -> dict[str, float]:
    """``casatasks.flagdata`` in place on ``vis`` (DATA column, no flag backup), returning
    its wall and CPU seconds (the CASA process's, all threads)."""
    import casatasks

    t0, c0 = time.perf_counter(), time.process_time()
    casatasks.flagdata(vis=vis, mode=mode, datacolumn="data", action="apply",
                       flagbackup=False)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}


def _children_cpu() -> float:
    """CPU seconds of this process's terminated children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _warm_worker(params: Any) -> float:
    """Load the flagging kernels (Numba cache) in a worker: once per worker lifetime, as CASA
    and AOFlagger are imported before their clocks start. Returns seconds."""
    t0 = time.perf_counter()
    from contimg_dask.testing.flagging import flag_subband

    ant1, ant2 = np.triu_indices(4)
    rng = np.random.default_rng(0)
    vis = (rng.normal(size=(24, ant1.size, 8, 2)) + 1j).astype(np.complex64)
    flag_subband(vis, np.zeros(vis.shape, bool), ant1, ant2, params)
    return time.perf_counter() - t0


class WorkerUsage:
    """Peak resident memory of each Dask worker process while the block is flagged, above
    the worker's level just before (sampled every MEMORY_SAMPLE_S s), and the CPU seconds
    the workers and this process spent."""

    def __init__(self, client: Any) -> None:
        import psutil

        self._processes = {address: psutil.Process(pid)
                           for address, pid in client.run(os.getpid).items()}
        self.idle = {a: p.memory_info().rss for a, p in self._processes.items()}
        self.peak = dict(self.idle)
        self.cpu_seconds = -self._cpu()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for address, process in self._processes.items():
                self.peak[address] = max(self.peak[address], process.memory_info().rss)
            time.sleep(MEMORY_SAMPLE_S)

    def _cpu(self) -> float:
        workers = sum(sum(p.cpu_times()[:2]) for p in self._processes.values())
        return workers + time.process_time()

    def __enter__(self) -> WorkerUsage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_seconds += self._cpu()
        self._stop.set()
        self._thread.join()

    def above_idle(self) -> dict[str, int]:
        return {a: self.peak[a] - self.idle[a] for a in self.idle}


def _kernel_seconds(store: Path, params: Any, ant1: np.ndarray, ant2: np.ndarray,
                    channels: slice) -> float:
    """CPU seconds of ``flag_subband`` on one subband chunk (best of three), in this
    process."""

    from contimg_dask.io.store.block_store import block_node, open_block
    from contimg_dask.io.store.zarr_reads import read_channels
    from contimg_dask.testing.flagging import flag_subband

    group = store / block_node(open_block(store)).name
    vis = read_channels(group / "VISIBILITY", channels)
    flags = read_channels(group / "FLAG", channels)
    best = np.inf
    for _ in range(3):
        t0 = time.process_time()
        flag_subband(vis, flags, ant1, ant2, params)
        best = min(best, time.process_time() - t0)
    return best


def _markdown(summary: dict) -> str:
    results, memory = summary["results"], summary["ours_memory"]
    lines = [f"# Flagging side by side ({summary['preset']} block, "
             f"{summary['visibilities'] / 1e6:.1f} M visibilities, {summary['date']})", "",
             "| flagger | processes | seconds | CPU seconds | M vis/s | recall (RFI > 5 sigma) | "
             "recall, bad antenna | recall, other RFI | false-flag rate | flagged |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['processes']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
            f"{r['mvis_per_s']:.1f} | "
            f"{100 * r['recall']:.2f} % | {100 * r['recall_bad_antenna']:.2f} % | "
            f"{100 * r['recall_other']:.2f} % | {100 * r['false_flag_rate']:.2f} % | "
            f"{100 * r['flagged']:.2f} % |")
    peaks = ", ".join(f"{x:.2f}" for x in memory["peak_above_idle_chunks"])
    lines += ["", f"- CASA tfcrop / ours, wall time: {summary['tfcrop_over_ours']:.1f}x "
              f"(target >= 5); CPU time: {summary['cpu_tfcrop_over_ours']:.1f}x",
              f"- ours, peak memory per Dask worker above its idle level: {peaks} subband "
              f"chunks (1 chunk = {memory['chunk_mb']:.0f} MB of complex64 visibilities; "
              "limit 2)",
              f"- ours, kernel CPU time on one subband chunk: {summary['kernel_cpu_s']:.2f} s",
              f"- ours, loading the kernels once per worker (before the clock, like the "
              f"peers' imports): {max(summary['worker_warm_up_s']):.2f} s"]
    return "\n".join(lines) + "\n"


def main() -> None:
    from contimg_dask.casa import run_casa
    from contimg_dask.config import load_config
    from contimg_dask.io.ingest import ingest_block
    from contimg_dask.io.outputs.exports import export_block
    from contimg_dask.io.store.block_store import block_node, open_block
    from contimg_dask.pipeline.cluster import dask_client
    from contimg_dask.processing.flag import flag_block, flag_parameters
    from tests.helpers import read_truth, rfi_truth

    args, block, work = prepare(__doc__, "flagging")
    # The CASA process imports flagdata_cpu_timed by name (not from __main__).
    from benchmarks import flagging as this

    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT.parent), os.environ.get("PYTHONPATH")) if p)
    config = load_config(environment="testing", overrides={"paths.root": str(work)})
    params = flag_parameters(config.flagging)
    truth_path = next(block.glob("*_truth.h5"))
    truth = read_truth(truth_path)
    files = [block / truth["files"][str(sb)] for sb in range(16)]
    results = {}
    with dask_client(config.dask) as client:
        store = ingest_block(files, work / "block.zarr", config)
        ds = block_node(open_block(store)).to_dataset(inherit=False)
        shape = ds.VISIBILITY.shape
        cross = (ds.baseline_antenna1_name != ds.baseline_antenna2_name).values
        rfi = rfi_truth(store, truth_path, shape)
        sigma = truth["noise_sigma_jy"]
        bad = _bad_antenna_baselines(ds, truth) & cross
        n_vis = int(np.prod(shape))
        export_block(store, work / "ingest.ms", "ms", config)  # before our flags
        warm_up = list(client.run(_warm_worker, params).values())
        with WorkerUsage(client) as usage:
            t0 = time.perf_counter()
            flag_block(store, config.flagging)
            seconds = time.perf_counter() - t0
        ds = block_node(open_block(store)).to_dataset(inherit=False)
        results["ours"] = {"seconds": seconds, "cpu_seconds": usage.cpu_seconds,
                           "processes": config.dask.n_workers, **_score(
            ds[ds.attrs["data_groups"]["base"]["flag"]].values, rfi, sigma, cross, bad)}
    n_t, n_bl, _, n_p = shape
    chunk = ds.attrs["contimg"]["subband_chunks"][0]
    chunk_bytes = n_t * n_bl * chunk * n_p * np.dtype(np.complex64).itemsize
    index = {a: i for i, a in enumerate(np.unique(np.concatenate(
        [ds.baseline_antenna1_name.values, ds.baseline_antenna2_name.values])))}
    ant1 = np.array([index[a] for a in ds.baseline_antenna1_name.values])
    ant2 = np.array([index[a] for a in ds.baseline_antenna2_name.values])
    kernel_cpu = _kernel_seconds(store, params, ant1, ant2, slice(0, chunk))
    vis, ingest_flags = ds.VISIBILITY.values, ds.FLAG.values
    for strategy in AOFLAGGER_STRATEGIES:
        t0, c0 = time.perf_counter(), _children_cpu() + time.process_time()
        ao = _aoflagger(vis, ingest_flags, cross, strategy)
        results[f"aoflagger_{strategy}"] = {
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": _children_cpu() + time.process_time() - c0,
            "processes": AOFLAGGER_PROCESSES, **_score(ao, rfi, sigma, cross, bad)}
        del ao
    del vis
    n_spw = len(ds.attrs["contimg"]["subbands"])
    for mode in ("tfcrop", "rflag"):
        ms = work / f"{mode}.ms"
        shutil.copytree(work / "ingest.ms", ms)
        timing = run_casa(config, this.flagdata_cpu_timed, str(ms), mode)
        results[f"casa_{mode}"] = {**timing, "processes": 1,
                                   **_score(_ms_flags(ms, shape, n_spw), rfi, sigma, cross,
                                            bad)}
        shutil.rmtree(ms)
    for r in results.values():
        r["mvis_per_s"] = n_vis / r["seconds"] / 1e6
    above = usage.above_idle()
    summary = {
        "preset": args.preset, "visibilities": n_vis, "sigma_jy": sigma,
        "strong_rfi_threshold": f"{SIGMA_CUT} sigma", "results": results,
        "tfcrop_over_ours": results["casa_tfcrop"]["seconds"] / results["ours"]["seconds"],
        "cpu_tfcrop_over_ours": (results["casa_tfcrop"]["cpu_seconds"]
                                 / results["ours"]["cpu_seconds"]),
        "ours_memory": {"chunk_mb": chunk_bytes / 1e6,
                        "idle_mb": [v / 1e6 for v in usage.idle.values()],
                        "peak_above_idle_mb": [v / 1e6 for v in above.values()],
                        "peak_above_idle_chunks": [v / chunk_bytes for v in above.values()]},
        "kernel_cpu_s": kernel_cpu, "worker_warm_up_s": warm_up,
        "aoflagger_strategies": list(AOFLAGGER_STRATEGIES),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"flagging_{args.preset}.json").write_text(json.dumps(summary, indent=2))
    text = _markdown(summary)
    (RESULTS / f"flagging_{args.preset}.md").write_text(text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
