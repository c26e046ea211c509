"""Real Dask processes on 127.0.0.1 for the cluster tests and benchmarks
(tests/e2e/test_cluster.py, benchmarks/scaling.py, benchmarks/soak.py): a ``dask scheduler``
and ``dask worker`` processes started from this environment's ``dask`` command on free
ports, each with its own log, killed and restarted as a test needs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_command(args: list[str], log: Path) -> subprocess.Popen:
    """``dask ARGS`` (this environment's) in its own session, output appended to ``log``."""
    with log.open("a") as out:
        return subprocess.Popen([str(Path(sys.executable).with_name("dask")), *args],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def end_session(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 60
                ) -> None:
    """Send ``sig`` to ``proc``'s whole session (a nanny and its worker), wait, then SIGKILL
    whatever is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=timeout_s)


class DaskProcesses:
    """A ``dask scheduler`` on a free port of 127.0.0.1 and ``n_workers`` ``dask worker``
    processes (each under its nanny, named ``w0``, ``w1``, ..., with ``resources`` such as
    ``CASA=1``, or per worker from a list); logs under ``directory``."""

    def __init__(self, directory: Path, n_workers: int = 2, *, nthreads: int = 1,
                 memory_limit: str = "2GiB", resources: str | list[str] | None = "CASA=1"
                 ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.n_workers = n_workers
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.resources = resources
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}

    def start(self) -> DaskProcesses:
        """Start the scheduler and every worker (returns at once: see :meth:`wait`)."""
        self.start_scheduler()
        for i in range(self.n_workers):
            self.start_worker(f"w{i}")
        return self

    def start_scheduler(self) -> None:
        self.scheduler = dask_command(
            ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
            self.directory / "scheduler.log")

    def start_worker(self, name: str) -> None:
        args = ["worker", self.address, "--name", name, "--nthreads", str(self.nthreads),
                "--memory-limit", self.memory_limit, "--no-dashboard", "--host", "127.0.0.1"]
        resources = (self.resources[int(name[1:])] if isinstance(self.resources, list)
                     else self.resources)
        if resources:
            args += ["--resources", resources]
        self.workers[name] = dask_command(args, self.directory / f"worker-{name}.log")

    def restart_exited_workers(self, timeout_s: float = 60) -> list[str]:
        """Start again the workers whose process has ended (a worker and its nanny exit
        when they lose the scheduler: a service manager restarts them); their names."""
        deadline = time.monotonic() + timeout_s
        restarted = []
        for name, proc in list(self.workers.items()):
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is not None:
                self.start_worker(name)
                restarted.append(name)
        return restarted

    def wait(self, client, n_workers: int | None = None, timeout_s: float = 120) -> None:
        """Until ``n_workers`` (all by default) workers are connected to the scheduler."""
        client.wait_for_workers(n_workers or self.n_workers, timeout=timeout_s)

    def worker_pids(self, client) -> dict[str, int]:
        """Each worker's name to the pid of its worker process (below the nanny)."""
        info = client.scheduler_info(n_workers=-1)["workers"]
        pids = client.run(os.getpid)
        return {info[address]["name"]: pid for address, pid in pids.items()}

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler (as a crash or an OOM kill would)."""
        assert self.scheduler is not None
        self.scheduler.kill()
        self.scheduler.wait(timeout=30)

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc is not None and proc.poll() is None:
                end_session(proc)


def rss_mb(pid: int) -> float:
    """Resident memory (MB) of ``pid`` and its descendants now (0 if it is gone)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss / 2**20
    return total


def wait_until(predicate, timeout_s: float, what: str, step_s: float = 0.1) -> None:
    """Poll ``predicate()`` until true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(step_s)


def casa_process_span(seconds: float) -> dict[str, float]:
    """Run in a CASA process (``run_casa``): sleep ``seconds``; the pid of the process that
    started this one (a Dask worker, or the caller) and the wall-clock span (Unix s)."""
    start = time.time()
    time.sleep(seconds)
    return {"parent": os.getppid(), "start": start, "end": time.time()}
