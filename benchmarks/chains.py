"""The chains the benchmark compares, each run in its own process (``python -m
benchmarks.chains NAME BLOCK_DIR WORK_DIR``) so that its peak memory is its own.

Prints one JSON object: seconds per stage.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _files(block_dir: Path) -> tuple[list[Path], dict]:
    from tests.helpers import read_truth

    truth = read_truth(next(block_dir.glob("*_truth.h5")))
    return [block_dir / truth["files"][str(sb)] for sb in range(16)], truth


def warm_inputs(files: list[Path]) -> None:
    """Read the subband files so that every timed read starts from the page cache. This
    machine reclaims page cache it considers cold (kdamond) within seconds, so warming once
    for all chains would favour whichever chain runs first."""
    for path in files:
        path.read_bytes()


def floor(block_dir: Path, work: Path) -> dict:
    """h5py reading the raw arrays of the 16 files: the I/O floor."""
    import h5py

    files, _ = _files(block_dir)
    warm_inputs(files)
    t0 = time.perf_counter()
    total = 0
    for path in files:
        with h5py.File(path, "r") as f:
            for name in ("visdata", "flags", "nsamples"):
                total += f["Data"][name][()].nbytes
    return {"read_raw": time.perf_counter() - t0, "bytes": total}


def ours(block_dir: Path, work: Path) -> dict:
    """contimg-dask: ingest (adding the rephased group, its visibilities rotated on the fly:
    the default) -> MS export (rotating while it writes), on a LocalCluster of
    the configured size started before the clock starts (as the pipeline runs: one
    long-lived cluster). The block
    is processed twice: the first ("cold": workers importing modules) is reported too, the
    second ("warm", the steady state of a running pipeline) is the result."""
    from contimg_dask.config import load_config
    from contimg_dask.pipeline.cluster import dask_client

    config = load_config(environment="testing", overrides={"paths.root": str(work)})
    with dask_client(config.dask):
        cold = _ours_stages(block_dir, work, config)
        shutil.rmtree(work / "plain.zarr")
        os.sync()
        warm = _ours_stages(block_dir, work, config)
    warm["cold"] = cold
    return warm


def _ours_stages(block_dir: Path, work: Path, config) -> dict:
    from contimg_dask.coords.frames import earth_orientation
    from contimg_dask.io.ingest import ingest_block
    from contimg_dask.io.outputs.exports import export_block
    from contimg_dask.processing.rephase import rephase_block

    earth_orientation([2461120.5])  # astropy parses its IERS table once per process
    files, _ = _files(block_dir)
    out = {}
    warm_inputs(files)
    t0 = time.perf_counter()
    store = ingest_block(files, work / "block.zarr", config, rephase=True)
    out["ingest_and_rephase"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    export_block(store, work / "ours.ms", "ms", config)
    out["ms_export"] = time.perf_counter() - t0
    shutil.rmtree(work / "ours.ms")
    # The figures below are not part of the chain; each starts after a sync, with only its
    # own inputs on disk (this machine reclaims page cache actively: a larger cache slows
    # whatever runs).
    os.sync()
    t0 = time.perf_counter()
    ra, dec = rephase_block(store)  # the standalone stage, again: UVWs (rotation on the fly)
    out["standalone_rephase"] = time.perf_counter() - t0
    os.sync()
    t0 = time.perf_counter()
    rephase_block(store, materialise=True)  # ... storing the rotated visibilities too
    out["standalone_rephase_materialised"] = time.perf_counter() - t0
    shutil.rmtree(store)
    os.sync()
    warm_inputs(files)
    t0 = time.perf_counter()
    ingest_block(files, work / "plain.zarr", config, rephase=False)
    out["ingest_only"] = time.perf_counter() - t0
    out["centre_rad"] = [ra, dec]
    return out


def ours_threads(block_dir: Path, work: Path) -> dict:
    """The same stages on Dask's threaded scheduler in one process (no cluster)."""
    from contimg_dask.config import load_config

    config = load_config(environment="testing", overrides={"paths.root": str(work)})
    return _ours_stages(block_dir, work, config)


def reference(block_dir: Path, work: Path) -> dict:
    """The telescope's current conversion: pyuvdata reads the 16 subbands, combines them,
    phases to the same centre and writes one Measurement Set with write_ms."""

    from tests.helpers import read_with_true_phase_centres

    files, truth = _files(block_dir)
    centre = json.loads((work / "centre.json").read_text())
    out = {}
    warm_inputs(files)
    t0 = time.perf_counter()
    parts = [read_with_true_phase_centres(f, truth) for f in files]
    out["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    uv = parts[0]
    uv.fast_concat(parts[1:], axis="freq", inplace=True, run_check=False)
    del parts
    out["combine"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    uv.phase(ra=centre[0], dec=centre[1], epoch="J2000", cat_name="centre", use_ant_pos=True)
    out["phase"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    uv.reorder_freqs(channel_order="freq")
    uv.write_ms(str(work / "reference.ms"), clobber=True, run_check=False)
    out["write_ms"] = time.perf_counter() - t0
    return out


CHAINS = {"floor": floor, "ours": ours, "ours_threads": ours_threads, "reference": reference}


def run_chain_here(chains: dict, argv: list[str]) -> None:
    """Child-process entry of a timed chain: ``argv`` is (name, block_dir, work). Runs
    ``chains[name]``, removes the Measurement Sets it wrote under ``work`` and prints its
    result as one ``RESULT <json>`` line for the parent."""
    name, block_dir, work = argv[0], Path(argv[1]), Path(argv[2])
    work.mkdir(parents=True, exist_ok=True)
    result = chains[name](block_dir, work)
    for path in work.rglob("*.ms"):
        shutil.rmtree(path, ignore_errors=True)
    print("RESULT " + json.dumps(result, default=lambda x: float(np.asarray(x))))


def chain_or_main(chains: dict, main: Callable[[], None]) -> None:
    """A benchmark module's command line: ``NAME BLOCK_DIR WORK`` with NAME one of
    ``chains`` runs that chain in this process (the parent starts one child per chain, see
    :func:`benchmarks.run.run_chain`); anything else runs the whole benchmark (``main``)."""
    if len(sys.argv) > 1 and sys.argv[1] in chains:
        run_chain_here(chains, sys.argv[1:4])
    else:
        main()


def truth_photometry_catalog(block_dir: Path, path: Path) -> Path:
    """The true sky of every simulated block in ``block_dir`` as the photometry reference
    catalogue at ``path`` (what an NVSS extract of the strip is for real data)."""
    import pandas as pd

    from contimg_dask.science.photometry_catalog import write_photometry_catalog
    from tests.helpers import read_truth

    rows = {source["name"]: {k: source[k] for k in ("name", "ra_deg", "dec_deg", "flux_jy")}
            for truth in sorted(block_dir.glob("*_truth.h5"))
            for source in read_truth(truth)["sources"]}
    write_photometry_catalog(path, pd.DataFrame(sorted(rows.values(),
                                                       key=lambda r: r["name"])))
    return path


def write_report(path: Path, lines: list[str]) -> None:
    """Write a benchmark's Markdown report (``lines``) to ``path`` and print it."""
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run_chain_here(CHAINS, sys.argv[1:4])
