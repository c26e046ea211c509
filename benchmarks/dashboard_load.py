"""Does a loaded dashboard slow the pipeline, and what does it cost? Measured in CPU seconds
(robust on a shared machine, unlike wall time), on one machine (loopback).

    python -m benchmarks.dashboard_load [--preset small] [--seconds 60]
                                        [--sweep 0,5,20] [--sessions 20] [--rate 100]

- The state store (SQLite) is seeded with a day of history (280 blocks through six or
  seven stages, per-antenna flag figures, solutions every 24th block, their metrics and
  events; 12 candidates with a light curve of 280 epochs in the photometry tables), as the
  dashboard would find it.
- Dashboard cost: the dashboard process's CPU seconds per minute with N open page sessions
  (each ``--sweep`` value; real websocket sessions through bokeh.client, receiving every
  update as a browser would, without rendering; counted once they are open), and its
  resident memory (sampled every 0.5 s).
- Pipeline cost: a child process ingests the cached simulated block (with the rephased
  group) and flags it, again and again, for ``--seconds``; its CPU seconds per block
  (``time.process_time``, all its threads) are the measure. It runs three times: A1
  without a dashboard, B with the dashboard serving ``--sessions`` sessions and ``--rate``
  requests/s on ``/metrics``, then A2 without a dashboard again. Wall seconds per block
  are recorded too, but compete with everything else on a shared machine.
- The load average (1 min) is recorded at the start and end of each phase.

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
#: A calibrator transits every this many blocks (solutions heatmap columns).
CALIBRATOR_EVERY = 24
#: Candidates with a light curve of a day's epochs (one per block).
CANDIDATES = 12
BLOCK_INTERVAL_S = 309.0
#: The dashboard's stated memory bound (docs/operations.md), resident, MiB: 263 MiB measured
#: with 20 sessions and the candidates' light curves shown, plus ~14 %.
MEMORY_BOUND_MIB = 350.0


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
    """Ingest + flag the block repeatedly for ``seconds``; wall and CPU seconds per block."""
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
    per_block, per_block_cpu = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0, c0 = time.perf_counter(), time.process_time()
        store = ingest_block(files, work / "block.zarr", config, rephase=True)
        flag_block(store, config.flagging)
        per_block_cpu.append(time.process_time() - c0)
        per_block.append(time.perf_counter() - t0)
        shutil.rmtree(store)
    return {"per_block_s": per_block, "per_block_cpu_s": per_block_cpu}


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
    scrape /metrics at ``rate`` (0: not at all) for ``seconds``."""
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
    if rate > 0:
        thread.start()
    loop.call_later(seconds, loop.stop)
    loop.start()
    if rate > 0:
        thread.join()
    connected = sum(s.connected for s in opened)
    return {"sessions": sessions, "sessions_open_s": open_s, "sessions_connected": connected,
            "document_changes_received": changes["n"], "metrics": scrape}


# -- the run -----------------------------------------------------------------------------

def seed_history(root: Path) -> None:
    """A day of blocks in the SQLite store under ``root``."""
    from contimg_dask.config import load_config
    from contimg_dask.state import open_state_store
    from tests.dashboard_support import heartbeats, record_block, write_light_curves

    config = load_config(environment="testing", environ={}, overrides={"paths.root": str(root)})
    store = open_state_store(config)
    (root / "products").mkdir(parents=True, exist_ok=True)
    now = time.time()
    for i in range(DAY_BLOCKS):
        at = now - BLOCK_INTERVAL_S * (DAY_BLOCKS - i)
        block_id = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
        record_block(store, block_id, at, latency_s=200.0 + (i % 17) * 8,
                     products_dir=root / "products" if i == DAY_BLOCKS - 1 else None,
                     fail_stage="image" if i % 40 == 39 else None,
                     calibrator=i % CALIBRATOR_EVERY == 0)
    epochs = [60640.0 + i * BLOCK_INTERVAL_S / 86400.0 for i in range(DAY_BLOCKS)]
    curves = {}
    for k in range(CANDIDATES):
        name = f"J{k:04d}+4000"
        store.emit("candidate", {"name": name, "kind": "variable", "metrics": {"v": 0.3}})
        curves[name] = (epochs, [0.01 + 0.001 * k] * DAY_BLOCKS, [0.001] * DAY_BLOCKS,
                        [None] * DAY_BLOCKS)
    write_light_curves(root / "products" / "photometry", curves)
    heartbeats(store, now)
    store.close()


def _load1() -> float:
    return os.getloadavg()[0]


def _worker_phase(block: Path, work: Path, seconds: float) -> dict[str, Any]:
    load = _load1()
    worker = _child(["--worker", str(block), str(work), str(seconds)])
    _wait_ready(worker)
    _go(worker)
    return {**_result(worker), "load1": [load, _load1()]}


def _cpu_s(process: Any) -> float:
    times = process.cpu_times()
    return times.user + times.system


class Dashboard:
    """The dashboard process over the seeded store, its CPU and memory sampled."""

    def __init__(self, root: Path) -> None:
        import psutil

        from tests.dashboard_support import DashboardProcess

        self.process = DashboardProcess(root, {"monitoring.dashboard.refresh_s": 2.0,
                                               "monitoring.dashboard.snapshot_s": 1.0}).start()
        assert self.process.process is not None
        self.server = psutil.Process(self.process.process.pid)
        self.rss_mib: list[float] = []

    def sample_while(self, running: Any, seconds: float | None = None) -> float:
        """Sample memory every 0.5 s while ``running()`` (or for ``seconds``); the CPU
        seconds the dashboard used meanwhile."""
        cpu0 = _cpu_s(self.server)
        end = None if seconds is None else time.monotonic() + seconds
        while running() and (end is None or time.monotonic() < end):
            self.rss_mib.append(self.server.memory_info().rss / 2**20)
            time.sleep(0.5)
        return _cpu_s(self.server) - cpu0

    def sweep(self, sessions: list[int], seconds: float) -> list[dict[str, Any]]:
        """CPU seconds per minute with each number of open sessions (no scraping)."""
        rows = []
        for n in sessions:
            load = _child(["--load", self.process.url + "/", str(n), "0",
                           str(seconds + 15.0)])
            _wait_ready(load)
            load1 = _load1()
            cpu = self.sample_while(lambda: True, seconds)
            rows.append({"sessions": n, "cpu_s_per_min": 60.0 * cpu / seconds,
                         "load1": [load1, _load1()], "load": _result(load)})
        return rows

    def stop(self) -> None:
        self.process.stop()


def _loaded_phase(block: Path, work: Path, dashboard: Dashboard, args: argparse.Namespace
                  ) -> dict[str, Any]:
    worker = _child(["--worker", str(block), str(work), str(args.seconds)])
    _wait_ready(worker)
    # the load outlasts the worker's window (which ends after its last whole block)
    load = _child(["--load", dashboard.process.url + "/", str(args.sessions), str(args.rate),
                   str(args.seconds + 30.0)])
    _wait_ready(load)
    load1 = _load1()
    _go(worker)
    started = time.monotonic()
    cpu = dashboard.sample_while(lambda: worker.poll() is None)
    elapsed = time.monotonic() - started
    return {**_result(worker), "load": _result(load), "load1": [load1, _load1()],
            "dashboard_cpu_s_per_min": 60.0 * cpu / elapsed}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sweep", default="0,5,20", help="session counts of the CPU sweep")
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
    dashboard = Dashboard(root)
    try:
        sweep = dashboard.sweep([int(n) for n in args.sweep.split(",")], args.seconds)
        loaded = _loaded_phase(block, work, dashboard, args)
    finally:
        dashboard.stop()
    a2 = _worker_phase(block, work, args.seconds)
    cpu = {k: _median(v["per_block_cpu_s"]) for k, v in (("a1", a1), ("b", loaded),
                                                          ("a2", a2))}
    wall = {k: _median(v["per_block_s"]) for k, v in (("a1", a1), ("b", loaded), ("a2", a2))}
    summary = {
        "preset": args.preset, "seconds": args.seconds, "sessions": args.sessions,
        "rate_per_s": args.rate, "history_blocks": DAY_BLOCKS, "cpus": os.cpu_count(),
        "a1": a1, "b": loaded, "a2": a2, "sweep": sweep,
        "median_block_cpu_s": cpu, "median_block_wall_s": wall,
        "cpu_ratio_b_over_a": cpu["b"] / statistics.mean([cpu["a1"], cpu["a2"]]),
        "wall_ratio_b_over_a": wall["b"] / statistics.mean([wall["a1"], wall["a2"]]),
        "dashboard_rss_peak_mib": max(dashboard.rss_mib),
        "memory_bound_mib": MEMORY_BOUND_MIB,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dashboard_load.json").write_text(json.dumps(summary, indent=2))
    (RESULTS / "dashboard_load.md").write_text(report(summary, args))
    print(report(summary, args))


def _loads(phase: dict[str, Any]) -> str:
    return f"{phase['load1'][0]:.1f} -> {phase['load1'][1]:.1f}"


def report(summary: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown table of the results."""
    cpu, wall, b = summary["median_block_cpu_s"], summary["median_block_wall_s"], summary["b"]
    scrape = b["load"]["metrics"]
    lines = [
        f"# Dashboard under load ({args.preset} block, {args.seconds:.0f} s per phase, "
        f"{summary['cpus']} CPUs)", "",
        "Dashboard process, CPU seconds per minute with N open page sessions "
        "(refresh 2 s, snapshot 1 s, a day of history):", "",
        "| sessions | CPU s / min | load average (1 min) |", "| --- | --- | --- |",
        *(f"| {r['sessions']} | {r['cpu_s_per_min']:.1f} | {_loads(r)} |"
          for r in summary["sweep"]),
        f"| {args.sessions} + {args.rate:.0f} req/s /metrics (phase B) | "
        f"{b['dashboard_cpu_s_per_min']:.1f} | {_loads(b)} |", "",
        "Block processing (ingest + flag), CPU seconds per block (median; wall seconds "
        "beside it compete with the rest of the machine):", "",
        "| phase | blocks | CPU s/block | wall s/block | load average (1 min) |",
        "| --- | --- | --- | --- | --- |",
        f"| A1 no dashboard | {len(summary['a1']['per_block_cpu_s'])} | {cpu['a1']:.2f} | "
        f"{wall['a1']:.2f} | {_loads(summary['a1'])} |",
        f"| B dashboard: {args.sessions} sessions + {args.rate:.0f} req/s | "
        f"{len(b['per_block_cpu_s'])} | {cpu['b']:.2f} | {wall['b']:.2f} | {_loads(b)} |",
        f"| A2 no dashboard | {len(summary['a2']['per_block_cpu_s'])} | {cpu['a2']:.2f} | "
        f"{wall['a2']:.2f} | {_loads(summary['a2'])} |", "",
        f"Per block under load / without (B against the mean of A1 and A2): CPU "
        f"{summary['cpu_ratio_b_over_a']:.3f}, wall {summary['wall_ratio_b_over_a']:.3f} "
        "(the issue asks < 1.05; wall is meaningful only on an otherwise idle machine).", "",
        f"Dashboard process: peak {summary['dashboard_rss_peak_mib']:.0f} MiB resident "
        f"(bound {MEMORY_BOUND_MIB:.0f} MiB).", "",
        f"/metrics in B: {scrape['requests']} requests at {scrape['rate_per_s']:.1f}/s, "
        f"{scrape['errors']} errors, p50 {scrape['latency_p50_ms']:.1f} ms, p99 "
        f"{scrape['latency_p99_ms']:.1f} ms; {b['load']['sessions_connected']}/"
        f"{b['load']['sessions']} sessions connected to the end.",
    ]
    return "\n".join(lines) + "\n"


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
