"""Does a loaded dashboard slow the pipeline? Block processing measured side by side, without
and with the dashboard under load, on one machine (loopback).

    python -m benchmarks.dashboard_load [--preset small] [--seconds 60] [--sessions 20]
                                        [--rate 100]

- The state store (SQLite) is seeded with a day of history (280 blocks through six stages,
  their metrics and events), as the dashboard would find it.
- Block processing: a child process ingests the cached simulated block (with the rephased
  group) and flags it, again and again, for ``--seconds``; its per-block seconds are the
  measure. It runs three times: A1 without a dashboard, B with the dashboard serving
  ``--sessions`` Bokeh page sessions (real websocket sessions through bokeh.client,
  receiving every update as a browser would, without rendering) and ``--rate`` requests/s
  on ``/metrics``, then A2 without a dashboard again (A1 and A2 bracket the drift of a
  shared machine).
- The dashboard process's resident memory is sampled every 0.5 s during B.

Results land in ``benchmarks/results/dashboard_load.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.run import CACHE, RESULTS, simulated_block

ROOT = Path(__file__).resolve().parents[1]
DAY_BLOCKS = 280
BLOCK_INTERVAL_S = 309.0
#: The dashboard's stated memory bound (docs/operations.md), resident, MiB.
MEMORY_BOUND_MIB = 300.0


def _child(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "benchmarks.dashboard_load", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _wait_ready(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        if line.startswith("READY"):
            return
    raise RuntimeError(f"{proc.args} exited before it was ready: {_result(proc)}")


def _go(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _result(proc: subprocess.Popen) -> dict[str, Any]:
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args} failed:\n{stderr[-3000:]}")
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


# -- the block processing worker ---------------------------------------------------------

def process_blocks(block_dir: Path, work: Path, seconds: float) -> dict[str, Any]:
    """Ingest + flag the block repeatedly for ``seconds``; seconds per block."""
    from contimg_dask.config import load_config
    from contimg_dask.io.ingest import ingest_block
    from contimg_dask.processing.flag import flag_block

    config = load_config(environment="testing", environ={},
                         overrides={"paths.root": str(work)})
    files = sorted(block_dir.glob("*_sb*.hdf5"))
    warm = ingest_block(files, work / "warm.zarr", config, rephase=True)
    flag_block(warm, config.flagging)  # imports, numba compilation, caches
    shutil.rmtree(warm)
    print("READY", flush=True)
    sys.stdin.readline()  # the parent says go once the load (if any) is running
    per_block = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        store = ingest_block(files, work / "block.zarr", config, rephase=True)
        flag_block(store, config.flagging)
        per_block.append(time.perf_counter() - t0)
        shutil.rmtree(store)
    return {"per_block_s": per_block}


# -- the load generator ------------------------------------------------------------------

def _scrape(url: str, rate: float, seconds: float, out: dict[str, Any]) -> None:
    """GET /metrics at ``rate`` per second on one keep-alive connection."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    latencies, errors = [], 0
    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) < start + seconds:
        due = start + n / rate
        if due > now:
            time.sleep(due - now)
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            response.read()
            errors += response.status != 200
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
        latencies.append(time.perf_counter() - t0)
        n += 1
    out.update(requests=n, errors=errors, rate_per_s=n / (time.monotonic() - start),
               latency_p50_ms=1e3 * statistics.median(latencies),
               latency_p99_ms=1e3 * sorted(latencies)[int(0.99 * (len(latencies) - 1))])


def generate_load(url: str, sessions: int, rate: float, seconds: float) -> dict[str, Any]:
    """Open ``sessions`` page sessions, print READY, then keep them receiving updates and
    scrape /metrics at ``rate`` for ``seconds``."""
    from bokeh.client import pull_session
    from tornado.ioloop import IOLoop

    loop = IOLoop.current()
    t0 = time.perf_counter()
    opened = [pull_session(url=url, io_loop=loop) for _ in range(sessions)]
    open_s = time.perf_counter() - t0
    changes = {"n": 0}

    def count(event: Any) -> None:
        changes["n"] += 1

    for session in opened:
        session.document.on_change(count)
        # bokeh.client reads messages only while its state machine runs: run it for good
        # (what ClientConnection.loop_until_closed does, on one loop for all sessions)
        session._connection._until_predicate = None
        loop.add_callback(session._connection._next)
    print("READY", flush=True)
    scrape: dict[str, Any] = {}
    thread = threading.Thread(target=_scrape, args=(url, rate, seconds, scrape))
    thread.start()
    loop.call_later(seconds, loop.stop)
    loop.start()
    thread.join()
    connected = sum(s.connected for s in opened)
    return {"sessions": sessions, "sessions_open_s": open_s, "sessions_connected": connected,
            "document_changes_received": changes["n"], "metrics": scrape}


# -- the run -----------------------------------------------------------------------------

def seed_history(root: Path) -> None:
    """A day of blocks in the SQLite store under ``root``."""
    from contimg_dask.config import load_config
    from contimg_dask.state import open_state_store
    from tests.dashboard_support import heartbeats, record_block

    config = load_config(environment="testing", environ={}, overrides={"paths.root": str(root)})
    store = open_state_store(config)
    (root / "products").mkdir(parents=True, exist_ok=True)
    now = time.time()
    for i in range(DAY_BLOCKS):
        at = now - BLOCK_INTERVAL_S * (DAY_BLOCKS - i)
        block_id = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
        record_block(store, block_id, at, latency_s=200.0 + (i % 17) * 8,
                     products_dir=root / "products" if i == DAY_BLOCKS - 1 else None,
                     fail_stage="image" if i % 40 == 39 else None)
    heartbeats(store, now)
    store.close()


def _worker_phase(block: Path, work: Path, seconds: float) -> list[float]:
    worker = _child(["--worker", str(block), str(work), str(seconds)])
    _wait_ready(worker)
    _go(worker)
    return _result(worker)["per_block_s"]


def _loaded_phase(block: Path, work: Path, root: Path, args: argparse.Namespace
                  ) -> dict[str, Any]:
    import psutil

    from tests.dashboard_support import DashboardProcess

    dashboard = DashboardProcess(root, {"monitoring.dashboard.refresh_s": 2.0,
                                        "monitoring.dashboard.snapshot_s": 1.0}).start()
    try:
        worker = _child(["--worker", str(block), str(work), str(args.seconds)])
        _wait_ready(worker)
        # the load outlasts the worker's window (which ends after its last whole block)
        load = _child(["--load", dashboard.url + "/", str(args.sessions), str(args.rate),
                       str(args.seconds + 30.0)])
        _wait_ready(load)
        assert dashboard.process is not None
        server = psutil.Process(dashboard.process.pid)
        cpu0 = server.cpu_times()
        _go(worker)
        rss = []
        while worker.poll() is None:
            rss.append(server.memory_info().rss / 2**20)
            time.sleep(0.5)
        cpu1 = server.cpu_times()
        per_block = _result(worker)["per_block_s"]
        load_result = _result(load)
    finally:
        dashboard.stop()
    return {"per_block_s": per_block, "load": load_result,
            "dashboard_rss_peak_mib": max(rss), "dashboard_rss_mean_mib": statistics.mean(rss),
            "dashboard_cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args()
    block = simulated_block(args.preset)
    work = CACHE / "dashboard_load"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "pipeline"
    root.mkdir(parents=True)
    seed_history(root)
    a1 = _worker_phase(block, work, args.seconds)
    loaded = _loaded_phase(block, work, root, args)
    a2 = _worker_phase(block, work, args.seconds)
    baseline = statistics.mean([statistics.median(a1), statistics.median(a2)])
    summary = {
        "preset": args.preset, "seconds": args.seconds, "sessions": args.sessions,
        "rate_per_s": args.rate, "history_blocks": DAY_BLOCKS,
        "without_dashboard_a1_s": a1, "without_dashboard_a2_s": a2, **loaded,
        "median_block_s": {"a1": statistics.median(a1), "loaded": statistics.median(
            loaded["per_block_s"]), "a2": statistics.median(a2)},
        "slowdown": statistics.median(loaded["per_block_s"]) / baseline - 1.0,
        "memory_bound_mib": MEMORY_BOUND_MIB,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dashboard_load.json").write_text(json.dumps(summary, indent=2))
    m, load = summary["median_block_s"], loaded["load"]
    lines = [
        f"# Dashboard under load ({args.preset} block, {args.seconds:.0f} s per phase)", "",
        "| phase | blocks | median s/block |", "| --- | --- | --- |",
        f"| A1 no dashboard | {len(a1)} | {m['a1']:.2f} |",
        f"| B dashboard: {args.sessions} sessions + {args.rate:.0f} req/s /metrics | "
        f"{len(loaded['per_block_s'])} | {m['loaded']:.2f} |",
        f"| A2 no dashboard | {len(a2)} | {m['a2']:.2f} |", "",
        f"Slowdown of block processing under load: {100 * summary['slowdown']:+.1f} % "
        f"(B against the mean of A1 and A2).", "",
        f"Dashboard process: peak {loaded['dashboard_rss_peak_mib']:.0f} MiB resident "
        f"(bound {MEMORY_BOUND_MIB:.0f} MiB), {loaded['dashboard_cpu_s']:.1f} CPU s over the "
        f"phase.", "",
        f"/metrics: {load['metrics']['requests']} requests at "
        f"{load['metrics']['rate_per_s']:.1f}/s, {load['metrics']['errors']} errors, p50 "
        f"{load['metrics']['latency_p50_ms']:.1f} ms, p99 "
        f"{load['metrics']['latency_p99_ms']:.1f} ms; {load['sessions_connected']}/"
        f"{load['sessions']} sessions connected to the end, "
        f"{load['document_changes_received']} document changes received "
        f"(opening them took {load['sessions_open_s']:.0f} s).",
    ]
    (RESULTS / "dashboard_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        result = process_blocks(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1:2] == ["--load"]:
        result = generate_load(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]),
                               float(sys.argv[5]))
    else:
        main()
        sys.exit(0)
    print("RESULT " + json.dumps(result), flush=True)
