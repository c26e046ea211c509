"""Reading a block's corrected data computed on the fly (the default apply).

    python -m benchmarks.corrected_reads [--preset full] [--reuse]

On the cached simulated block: ingest, solve on its calibrator (SIMCAL), apply on the fly,
then compute every variable of :func:`~contimg_dask.io.store.block_calibration.corrected_dataset`
(VISIBILITY_CORRECTED, WEIGHT_CORRECTED, FLAG_CORRECTED, reduced to sums in one graph, so
nothing but the sums is held), ``--repeats`` times: on the configured LocalCluster (wall
seconds), and with ``--threads`` in this process on Dask's threaded scheduler (wall and CPU
seconds: the CPU time counts the work done, whatever else the machine is running). With
``--reuse`` the prepared store of an earlier run is timed again (to time another version of
the code on the same store). Prints the seconds of each repeat as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

from benchmarks.calibration import _catalog
from benchmarks.run import CACHE, simulated_block


def main() -> None:
    import dask

    from contimg_dask.config import load_config
    from contimg_dask.io.ingest import ingest_block
    from contimg_dask.io.store.block_calibration import corrected_dataset
    from contimg_dask.pipeline.cluster import dask_client
    from contimg_dask.processing.calibrate_apply import apply_solutions
    from contimg_dask.processing.calibrate_solve import solve_block
    from tests.helpers import read_truth

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="full")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--threads", action="store_true")
    args = parser.parse_args()
    block = simulated_block(args.preset)
    work = CACHE / "corrected_reads"
    work.mkdir(parents=True, exist_ok=True)
    config = load_config(environment="testing", overrides={
        "paths.root": str(work), "calibration.catalog": str(_catalog(
            block, work / "calibrators.csv"))})
    store = work / "block.zarr"
    if not args.reuse:
        with dask_client(config.dask):
            truth = read_truth(next(block.glob("*_truth.h5")))
            ingest_block([block / truth["files"][str(sb)] for sb in range(16)], store, config)
            solve_block(store, config, work / "solutions.zarr")
            apply_solutions(store, work / "solutions.zarr", config, materialise=False)
    seconds, cpu = [], []
    with contextlib.nullcontext() if args.threads else dask_client(config.dask):
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            corrected = corrected_dataset(store)
            dask.compute(*(corrected[name].data.sum() for name in corrected.data_vars))
            seconds.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    result = {"preset": args.preset, "scheduler": "threads" if args.threads else "cluster",
              "corrected_dataset_compute_s": seconds}
    if args.threads:
        result["cpu_s"] = cpu
    print(json.dumps(result))


if __name__ == "__main__":
    main()
