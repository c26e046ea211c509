"""The cluster recipes of cluster/: the SLURM spec's job script (dask-jobqueue renders it; no
SLURM here) and the SSH spec, run as ``SSHCluster`` runs it on each host
(``python -m distributed.cli.dask_spec --spec JSON``) but locally, without SSH."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from contimg_dask.testing.cluster import end_session, free_port

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"cluster_{name}", CLUSTER_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slurm_job_script_recycles_workers_before_the_walltime() -> None:
    pytest.importorskip("dask_jobqueue")
    from dask_jobqueue import SLURMCluster

    slurm = _load("slurm")
    options = slurm.slurm_cluster_options(
        queue="compute", account="dsa", cores=8, memory="64GiB", walltime="04:00:00",
        local_directory="/scratch/dask", log_directory="dask-logs",
        prologue=["source /opt/contimg/bin/activate"])
    options["scheduler_options"] = {"host": "127.0.0.1", "dashboard_address": ":0"}
    with SLURMCluster(**options) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p compute" in script and "#SBATCH -A dsa" in script
    assert "#SBATCH -t 04:00:00" in script and "#SBATCH -n 1" in script
    assert "source /opt/contimg/bin/activate" in script
    worker_line = next(line for line in script.splitlines() if "distributed.cli.dask_worker"
                       in line or " worker " in line)
    # 4 h walltime: the worker leaves after 230 min minus up to 5 min, before SLURM kills it.
    for expected in ("--nthreads 8", "--nanny", "--resources CASA=1", "--lifetime 230m",
                     "--lifetime-stagger 5m", "--local-directory /scratch/dask",
                     "--memory-limit 64.00GiB"):
        assert expected in worker_line, (expected, worker_line)
    assert "--nworkers" not in worker_line  # one worker process per job
    with pytest.raises(ValueError, match="too short"):
        slurm.slurm_cluster_options(queue=None, account=None, cores=1, memory="1GiB",
                                    walltime="00:14:00", local_directory="/tmp",
                                    log_directory="logs")


def test_ssh_spec_starts_a_scheduler_and_a_casa_worker(tmp_path: Path) -> None:
    """The scheduler and worker specs that SSHCluster sends to each host, started here."""
    from distributed import Client

    ssh = _load("ssh")
    port = free_port()
    options = ssh.ssh_cluster_options(["head", "node1"], nthreads=2, memory_limit="1GiB",
                                      port=port, dashboard_port=0)
    assert options["hosts"] == ["head", "node1"]
    scheduler_spec = {"cls": "distributed.Scheduler",
                      "opts": {**options["scheduler_options"], "host": "127.0.0.1"}}
    worker_spec = {"0": {"cls": options["worker_class"],
                         "opts": {**options["worker_options"], "host": "127.0.0.1"}}}
    address = f"tcp://127.0.0.1:{port}"
    log = (tmp_path / "spec.log").open("w")
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_spec", *args,
                               "--spec", json.dumps(spec)], stdout=log, stderr=log,
                              start_new_session=True)
             for args, spec in (([], scheduler_spec), ([address], worker_spec))]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            (worker,) = client.scheduler_info(n_workers=-1)["workers"].values()
            assert worker["resources"] == {"CASA": 1}
            assert worker["nthreads"] == 2 and worker["memory_limit"] == 2**30
    finally:
        for proc in reversed(procs):
            end_session(proc)
        log.close()
    with pytest.raises(ValueError, match="at least one worker"):
        ssh.ssh_cluster_options(["head"], nthreads=1, memory_limit="1GiB")
