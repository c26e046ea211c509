"""Dask over TLS, as cluster/README.md tells a cluster spanning networks to run: a real
``dask scheduler --protocol tls`` and ``dask worker`` with a self-signed certificate made
here (``distributed.security.Security.temporary``, which needs ``cryptography``); the
pipeline's client (``dask_client``) connects with the TLS settings of Dask's configuration;
a client with a certificate of another authority, or over plain TCP, is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from contimg_dask.pipeline.cluster import dask_client
from contimg_dask.testing.cluster import dask_command, end_session, free_port
from tests.helpers import make_config

pytest.importorskip("cryptography")
pytestmark = pytest.mark.slow


def test_pipeline_client_over_tls(tmp_path: Path) -> None:
    import dask
    from distributed import Client
    from distributed.security import Security

    temporary = Security.temporary()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(temporary.tls_ca_file)  # self-signed: the certificate is its own CA
    key.write_text(temporary.tls_scheduler_key)
    tls = ["--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    procs = [dask_command(["scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port",
                           str(port), "--no-dashboard", *tls], tmp_path / "scheduler.log")]
    procs.append(dask_command(["worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                               "--no-dashboard", "--resources", "CASA=1", *tls],
                              tmp_path / "worker.log"))
    try:
        settings = {"distributed.comm.tls.ca-file": str(cert),
                    "distributed.comm.tls.client.cert": str(cert),
                    "distributed.comm.tls.client.key": str(key),
                    "distributed.comm.require-encryption": True}
        config = make_config(tmp_path, **{"dask.scheduler_address": address,
                                          "dask.reconnect_timeout_s": 30.0})
        with dask.config.set(settings), dask_client(config.dask) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
            (worker,) = client.scheduler_info(n_workers=-1)["workers"]
            assert worker.startswith("tls://")
        stranger = Security.temporary()  # a certificate our CA did not sign: refused
        with pytest.raises((OSError, TimeoutError)):
            Client(address, security=stranger, timeout=5)
        plain = f"tcp://127.0.0.1:{port}"
        with pytest.raises((OSError, TimeoutError)):
            Client(plain, timeout=5)
    finally:
        for proc in reversed(procs):
            end_session(proc)
