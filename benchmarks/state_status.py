"""``StateStore.status()`` (what the dashboard's health and the CLI ask every second) with
~10k stage records: CPU per call of the caller and of the redis-server, Redis (a real
redis-server on loopback) side by side with SQLite (its peer: the same contract).

    python -m benchmarks.state_status [--blocks 1000] [--calls 50]

Each store gets ``blocks`` blocks of 10 stages (done with a result of two products and a
provenance, as the pipeline records; 2 % failed, 1 % running, the rest pending). Wall time
is printed but means nothing on a shared machine: compare CPU. Results land in
``benchmarks/results/state_status.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.run import RESULTS
from contimg_dask.config import load_config
from contimg_dask.errors import InputError
from contimg_dask.stages.contract import Product, Provenance, StageResult
from contimg_dask.state import open_state_store
from contimg_dask.state.protocol import StateStore

STAGES = ("ingest", "rephase", "flag", "calibrate_solve", "calibrate_apply", "export",
          "image", "mosaic", "photometry", "variability")


def _config(root: Path, overrides: dict[str, Any]):
    return load_config(environment="development", environ={},
                       overrides={"paths.root": str(root), **overrides})


def fill(store: StateStore, n_blocks: int) -> None:
    """``n_blocks`` x 10 stage records in the mix of a running pipeline."""
    provenance = Provenance(inputs=tuple(f"/incoming/b_sb{i:02d}.hdf5" for i in range(16)),
                            config_hash="c0ffee" * 10, versions={"numpy": "2.0", "casa": "6.7"},
                            command="contimg run")
    for b in range(n_blocks):
        for stage in STAGES:
            store.enqueue(f"2026-03-01T{b:06d}", stage)
    n = n_blocks * len(STAGES)
    for i in range(n - n // 100 - n // 100):  # the last 1 % pending, 1 % running
        lease = store.claim("bench", 600.0)
        if i % 50 == 49:
            store.fail(lease, InputError("truncated file", file="/incoming/x.hdf5"))
            continue
        store.complete(lease, StageResult(lease.stage, lease.block_id, (
            Product("ms", Path(f"/products/{lease.block_id}/{lease.stage}.ms"), "sha256:ab"),
            Product("png", Path(f"/products/{lease.block_id}/{lease.stage}.png"))),
            provenance, {"flagged_fraction": 0.1, "n_rows": 4656, "noise_jy": 1e-3},
            seconds=12.5, finished_at=1.77e9))
    for _ in range(n // 100):
        store.claim("bench", 600.0)


def _redis_cpu_s(store: StateStore) -> float:
    info = store._redis.info("cpu")  # the server's own account, outside this process
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(store: StateStore, calls: int) -> dict[str, float]:
    """Per call: CPU of this process and (Redis) of the server, ms; wall ms."""
    store.status()  # warm (scripts loaded, connections open)
    server0 = _redis_cpu_s(store) if store.backend == "redis" else 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        summary = store.status()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    server = (_redis_cpu_s(store) - server0) if store.backend == "redis" else 0.0
    return {"client_cpu_ms": 1e3 * cpu / calls, "server_cpu_ms": 1e3 * server / calls,
            "wall_ms": 1e3 * wall / calls,
            "stage_records": sum(sum(c.values()) for c in summary["stages"].values())}


def main() -> None:
    from tests.state.redis_process import RedisProcess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--label", default="current", help="a name for this run's code")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = _config(root / "redis-settings", {"state.redis.appendfsync": "everysec"})
        server = RedisProcess(root / "redis", config.state.redis).start()
        try:
            for backend, overrides in (
                    ("sqlite", {"state.sqlite.synchronous": "NORMAL"}),
                    ("redis", {"state.backend": "redis", "state.url": server.url,
                               "state.instance": "bench"})):
                store = open_state_store(_config(root / backend, overrides))
                fill(store, args.blocks)
                rows.append({"backend": backend, **measure(store, args.calls)})
                store.close()
        finally:
            server.stop()
    result = {"label": args.label, "blocks": args.blocks, "calls": args.calls,
              "load_1min": os.getloadavg()[0],
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "rows": rows}
    path = RESULTS / "state_status.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*runs, result], indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
