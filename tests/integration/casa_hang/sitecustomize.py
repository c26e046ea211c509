"""Test-only start-up hook (tests/integration/test_pipeline_casa_breaker.py puts this
directory first on PYTHONPATH of the CASA worker processes it causes): while the file named
by ``CONTIMG_TEST_CASA_HANG`` exists, a CASA worker hangs before configuring CASA, as a CASA
task stuck on a lock or an unreachable file system would; it leaves ``hung-PID`` beside that
file so that the test can check the process was killed."""

import os
import time
from pathlib import Path

_FLAG = os.environ.get("CONTIMG_TEST_CASA_HANG")
if _FLAG:
    import contimg_dask.casa.environment as _environment

    _configure_casa = _environment.configure_casa

    def _hang_while_flagged(*args, **kwargs):
        flag = Path(_FLAG)
        if flag.exists():
            (flag.parent / f"hung-{os.getpid()}").touch()
            time.sleep(3600)
        return _configure_casa(*args, **kwargs)

    _environment.configure_casa = _hang_while_flagged
