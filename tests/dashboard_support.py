"""Support for the dashboard tests: seed a state store through its public API the way the
pipeline would (blocks, stage results, metrics and events of the shared vocabulary), and run
``contimg dashboard`` as a real subprocess on a free port of 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from contimg_dask.photometry.tables import PhotometryTables
from contimg_dask.pipeline.monitor import antenna_events
from contimg_dask.stages.antenna_figures import (
    FLAGGED,
    SOLUTION_AMP,
    SOLUTION_PHASE,
    SOLUTION_SNR,
    antenna_figures,
)
from contimg_dask.stages.contract import Product, Provenance, StageResult
from contimg_dask.state import MetricSample, StateStore
from tests.helpers import without_disk_alerts

REPO = Path(__file__).resolve().parents[1]
STAGE_SECONDS = {"ingest": 41.0, "rephase": 12.0, "flag": 18.0, "calibrate_solve": 25.0,
                 "calibrate_apply": 9.0, "export": 30.0, "image": 120.0}
#: DSA-110's antenna names ("1".."117"; 96 in the array).
ANTENNAS = [str(a) for a in range(1, 97)]


def antenna_flag_fractions(block_flagged: float) -> list[float]:
    """Per-antenna flagged fractions around ``block_flagged``: antenna k gets
    block_flagged * (0.5 + k / 96), antenna "7" is fully flagged."""
    return [1.0 if name == "7" else block_flagged * (0.5 + k / 96.0)
            for k, name in enumerate(ANTENNAS)]


def antenna_solutions(seed: float) -> tuple[list[float], list[float], list[float]]:
    """Per-antenna amplitude, phase (deg) and SNR; antenna "7" without a solution (NaN)."""
    k = np.arange(len(ANTENNAS))
    amp, phase, snr = 1.0 + 0.002 * k + 0.01 * seed, (7.0 * k + seed) % 360 - 180, 40.0 + k
    for values in (amp, phase, snr):
        values[ANTENNAS.index("7")] = np.nan
    return amp.tolist(), phase.tolist(), snr.tolist()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quicklook(path: Path) -> Path:
    """A small PNG (a Gaussian 'source') at ``path``."""
    y, x = np.mgrid[-32:32, -32:32]
    fig, ax = plt.subplots(figsize=(3, 3), dpi=60)
    ax.imshow(np.exp(-(x**2 + y**2) / 40.0), origin="lower")
    fig.savefig(path)
    plt.close(fig)
    return path


def record_block(store: StateStore, block_id: str, finished_at: float, *,
                 latency_s: float = 250.0, flagged: float = 0.05,
                 products_dir: Path | None = None, fail_stage: str | None = None,
                 calibrator: bool = True) -> None:
    """One block through the stages of STAGE_SECONDS (the last ``fail_stage`` failing
    permanently; ``calibrate_solve`` only on a ``calibrator`` block), with the metrics and
    events the orchestrator records."""
    for sb in range(2):
        store.register_file(block_id, f"/incoming/{block_id}_sb{sb:02d}.hdf5", sb)
    store.seal_block(block_id, expected_files=2, deadline_s=600.0)
    store.emit("block_sealed", {"block_id": block_id, "status": "complete"})
    t = finished_at - sum(STAGE_SECONDS.values())
    for stage, seconds in STAGE_SECONDS.items():
        if stage == "calibrate_solve" and not calibrator:
            continue
        t += seconds
        store.enqueue(block_id, stage)
        lease = store.claim("test-worker", 60.0, stages=[stage])
        assert lease is not None and lease.block_id == block_id
        if stage == fail_stage:
            store.fail(lease, RuntimeError(f"{stage} of {block_id}: tclean exited with 1"))
            store.emit("stage_failed", {"block_id": block_id, "stage": stage,
                                        "error": "RuntimeError", "transient": False})
            return
        products: tuple[Product, ...] = ()
        figures: dict = {"seconds": seconds}
        if stage == "flag":
            figures.update({"flagged_fraction": flagged,
                            **{f"flagged_fraction_sb{sb}": flagged * (1 + sb) for sb in range(4)},
                            **antenna_figures(FLAGGED, ANTENNAS, antenna_flag_fractions(flagged))})
        if stage == "calibrate_solve":
            amp, phase, snr = antenna_solutions(flagged)
            figures.update({**antenna_figures(SOLUTION_AMP, ANTENNAS, amp),
                            **antenna_figures(SOLUTION_PHASE, ANTENNAS, phase),
                            **antenna_figures(SOLUTION_SNR, ANTENNAS, snr)})
        if stage == "image" and products_dir is not None:
            fits = products_dir / f"{block_id}.image.fits"
            quicklook(fits.with_suffix(".png"))
            products = (Product("image", fits),)
        result = StageResult(stage, block_id, products, Provenance((), "test"), figures,
                             seconds, t)
        store.complete(lease, result)
        for kind, data in antenna_events(result):  # as the orchestrator does
            store.emit(kind, data)
        store.emit("stage_done", {"block_id": block_id, "stage": stage, "seconds": seconds})
        store.record_metrics([MetricSample(f"stage_seconds.{stage}", seconds, t, block_id)])
    store.record_metrics([
        MetricSample("block_latency_s", latency_s, finished_at, block_id),
        MetricSample("blocks_done", 1.0, finished_at, block_id),
        MetricSample("flag_fraction", flagged, finished_at, block_id),
        MetricSample("calibration_snr", 42.0, finished_at, block_id),
        MetricSample("image_noise_jy", 1.1e-3, finished_at, block_id),
        MetricSample("image_dynamic_range", 850.0, finished_at, block_id),
        MetricSample("backlog_blocks", 1.0, finished_at)])


def heartbeats(store: StateStore, at: float, dask_workers: int = 2,
               dask_memory: float = 0.3) -> None:
    """The samples ``contimg watch``'s monitor thread records (processes and Dask cluster)."""
    store.record_metrics([MetricSample("heartbeat.watcher", 1.0, at),
                          MetricSample("heartbeat.pipeline", 1.0, at),
                          MetricSample("heartbeat.dask_workers", float(dask_workers), at),
                          MetricSample("dask_worker_memory_fraction", dask_memory, at)])


def write_light_curves(root: Path, curves: dict[str, tuple[list, list, list, list]]) -> None:
    """Measurement tables under the photometry ``root`` as the photometry stage writes them
    (one per image, i.e. per distinct MJD, the columns the light curves read) of ``curves``
    (name -> MJDs, fluxes Jy, errors Jy, upper limits Jy or None), and a variability table
    naming the catalogue version ``v1``. An epoch with an upper limit is flagged as one
    (flag 1); its flux is kept as given."""
    rows = [{"name": name, "mjd": t, "flux_jy": f, "flux_err_jy": e, "norm_flux_jy": f,
             "norm_err_jy": e, "upper_limit": u is not None,
             "upper_limit_jy": np.nan if u is None else u, "flags": int(u is not None)}
            for name, curve in curves.items() for t, f, e, u in zip(*curve, strict=True)]
    tables = PhotometryTables(root)
    for i, (mjd, epoch) in enumerate(pd.DataFrame(rows).groupby("mjd")):
        stem = f"epoch{i:03d}"
        tables.write(tables.measurement_path(stem, "v1"),
                     epoch.assign(epoch=stem, image=f"{stem}.fits", mjd=mjd))
    tables.write(tables.variability_path("v1"), pd.DataFrame({"name": list(curves)}))


class DashboardProcess:
    """``contimg --env testing --set ... dashboard --port P`` in its own process."""

    def __init__(self, root: Path, overrides: dict[str, object]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = {"paths.root": str(root), **without_disk_alerts(root), **overrides}
        self.command = [sys.executable, "-m", "contimg_dask.cli.main", "--env", "testing",
                        *(a for k, v in settings.items()
                          for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")),
                        "dashboard", "--port", str(self.port)]
        self.log = root / f"dashboard-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> DashboardProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("w") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the dashboard exited: {self.log.read_text()}")
            if self.status("/health") is not None:  # any answer, 403 included
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the dashboard did not answer in {timeout_s} s: "
                           f"{self.log.read_text()}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status(self, path: str) -> int | None:
        try:
            return self.get(path)[0]
        except (urllib.error.URLError, OSError):
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the CLI stops cleanly on it
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
