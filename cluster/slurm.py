"""Start the pipeline's Dask cluster on SLURM with dask-jobqueue's ``SLURMCluster``: the
scheduler in this process (run it on the login or head node, kept alive with ``tmux`` or as
a service), workers as SLURM jobs that scale with the backlog (``adapt``) and recycle
themselves before their walltime (``--lifetime`` with ``--lifetime-stagger``: the scheduler
moves their work off first, so no block is lost when a job ends).

    pip install '.[cluster]'              # dask-jobqueue
    python cluster/slurm.py --queue compute --account dsa --maximum-jobs 16

Each job is one worker process of ``--cores`` threads and ``--memory``, declaring ``CASA=1``
(one CASA process at a time, ``dask.casa_resource``). The scheduler's address is printed:
point the pipeline at it (``dask.scheduler_address``). Sizing: cluster/README.md.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

#: Minutes before the walltime by which a worker has retired (its lifetime ends earlier
#: by up to the stagger, so that not all workers of one submission leave together).
LIFETIME_MARGIN_MIN = 10
LIFETIME_STAGGER_MIN = 5


def _minutes(walltime: str) -> int:
    """``HH:MM:SS`` (or ``D-HH:MM:SS``) in whole minutes."""
    days, _, clock = walltime.rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + minutes + (seconds > 0)


def slurm_cluster_options(*, queue: str | None, account: str | None, cores: int,
                          memory: str, walltime: str, local_directory: str,
                          log_directory: str, casa_processes: int = 1,
                          interface: str | None = None, python: str | None = None,
                          prologue: list[str] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``dask_jobqueue.SLURMCluster`` for our pipeline (see the
    module docstring): one worker process per job, ``CASA=casa_processes``, a worker
    lifetime ``LIFETIME_MARGIN_MIN`` minutes short of ``walltime`` with a
    ``LIFETIME_STAGGER_MIN`` minute stagger."""
    lifetime = _minutes(walltime) - LIFETIME_MARGIN_MIN
    if lifetime <= LIFETIME_STAGGER_MIN:
        raise ValueError(f"walltime {walltime}: too short for a worker lifetime "
                         f"{LIFETIME_MARGIN_MIN} min shorter with a "
                         f"{LIFETIME_STAGGER_MIN} min stagger")
    options: dict[str, Any] = {
        "queue": queue, "account": account, "cores": cores, "processes": 1,
        "memory": memory, "walltime": walltime,
        "local_directory": local_directory, "log_directory": log_directory,
        "worker_extra_args": ["--resources", f"CASA={casa_processes}",
                              "--lifetime", f"{lifetime}m",
                              "--lifetime-stagger", f"{LIFETIME_STAGGER_MIN}m"],
        "job_script_prologue": prologue or [],
        "scheduler_options": {"dashboard_address": ":8787"},
    }
    if interface:
        options["interface"] = interface
    if python:
        options["python"] = python
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue")
    parser.add_argument("--account")
    parser.add_argument("--cores", type=int, default=8, help="threads per worker (job)")
    parser.add_argument("--memory", default="64GiB", help="per job")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument("--local-directory", default="$TMPDIR",
                        help="worker spill directory on the node")
    parser.add_argument("--log-directory", default="dask-logs")
    parser.add_argument("--interface", help="network interface of the nodes (e.g. ib0)")
    parser.add_argument("--minimum-jobs", type=int, default=1)
    parser.add_argument("--maximum-jobs", type=int, default=16)
    parser.add_argument("--prologue", action="append", default=[],
                        help="a line run before the worker, e.g. 'source /opt/venv/bin/"
                             "activate' (repeatable)")
    args = parser.parse_args()
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(**slurm_cluster_options(
        queue=args.queue, account=args.account, cores=args.cores, memory=args.memory,
        walltime=args.walltime, local_directory=args.local_directory,
        log_directory=args.log_directory, interface=args.interface,
        prologue=args.prologue))
    print(cluster.job_script(), flush=True)
    cluster.adapt(minimum_jobs=args.minimum_jobs, maximum_jobs=args.maximum_jobs)
    print(f"dask.scheduler_address: {cluster.scheduler_address}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.close()


if __name__ == "__main__":
    main()
