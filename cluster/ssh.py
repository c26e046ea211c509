"""Start the pipeline's Dask cluster over SSH with distributed's ``SSHCluster``: the scheduler
on the first host, one worker (under its nanny) per further host, each declaring ``CASA=1``
so that it runs one CASA process at a time (``dask.casa_resource``).

    pip install '.[cluster]'              # asyncssh, on the host that runs this
    python cluster/ssh.py head node1 node2 --nthreads 8 --memory-limit 48GiB

Every host needs the same Python environment at the same path (``--remote-python``), the
shared file system with ``paths.stores``/``paths.products`` at the same paths, and
password-less SSH from here. The scheduler's address is printed; point the pipeline at it
(``dask.scheduler_address``) and keep this process running (Ctrl-C stops the cluster). See
cluster/README.md for TLS (``--tls-ca/--tls-cert/--tls-key``) and the sizing notes.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def ssh_cluster_options(hosts: list[str], *, nthreads: int, memory_limit: str,
                        casa_processes: int = 1, port: int = 8786,
                        dashboard_port: int = 8787, remote_python: str | None = None,
                        local_directory: str | None = None,
                        security: Any = None) -> dict[str, Any]:
    """The keyword arguments of ``distributed.SSHCluster`` for our pipeline: ``hosts[0]``
    runs the scheduler (on ``port``), every further host one worker of ``nthreads``
    threads and ``memory_limit``, declaring ``CASA=casa_processes``; ``security`` a
    ``distributed.security.Security`` (TLS) or None."""
    if len(hosts) < 2:
        raise ValueError("hosts: the scheduler's host and at least one worker host")
    worker: dict[str, Any] = {"nthreads": nthreads, "memory_limit": memory_limit,
                              "resources": {"CASA": casa_processes}}
    if local_directory:
        worker["local_directory"] = local_directory
    options: dict[str, Any] = {
        "hosts": hosts,
        "scheduler_options": {"port": port, "dashboard_address": f":{dashboard_port}"},
        "worker_options": worker,
        "worker_class": "distributed.Nanny",
        "remote_python": remote_python or sys.executable,
    }
    if security is not None:
        options["security"] = security
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hosts", nargs="+", help="scheduler host, then worker hosts")
    parser.add_argument("--nthreads", type=int, default=8)
    parser.add_argument("--memory-limit", default="48GiB")
    parser.add_argument("--casa-processes", type=int, default=1)
    parser.add_argument("--port", type=int, default=8786)
    parser.add_argument("--remote-python", default=None)
    parser.add_argument("--local-directory", default=None, help="worker spill directory")
    parser.add_argument("--tls-ca", help="CA certificate: TLS between all processes")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    from distributed import SSHCluster
    from distributed.security import Security

    security = None
    if args.tls_ca:
        security = Security(tls_ca_file=args.tls_ca, tls_client_cert=args.tls_cert,
                            tls_client_key=args.tls_key, tls_scheduler_cert=args.tls_cert,
                            tls_scheduler_key=args.tls_key, tls_worker_cert=args.tls_cert,
                            tls_worker_key=args.tls_key, require_encryption=True)
    cluster = SSHCluster(**ssh_cluster_options(
        args.hosts, nthreads=args.nthreads, memory_limit=args.memory_limit,
        casa_processes=args.casa_processes, port=args.port,
        remote_python=args.remote_python, local_directory=args.local_directory,
        security=security))
    print(f"dask.scheduler_address: {cluster.scheduler_address}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cluster.close()


if __name__ == "__main__":
    main()
