"""Configure CASA (casatools/casatasks) offline, before it is imported.

CASA 6 reads its settings from ``casaconfig.config`` when ``casatools`` is imported, and by
default would look for measures data in ``~/.casa/data``, try to download and update them, and
write ``casa-<time>.log`` into the working directory. Here, before the first import:

- measures data come from python-casacore's wheel (``casacore/data``: geodetic tables with
  the IERS and observatory tables, and JPL ephemerides) through the pipeline's own measures
  directory (``measures_dir.py``: the array registered in the Observatories table), and
  auto-updates are off, so nothing is ever downloaded;
- CASA's log and cache go to the pipeline's own directories (``paths.logs``/``paths.cache``),
  never the user's home; matplotlib's cache (CASA imports it) goes there too;
- casaconfig's start-up chatter is silenced; :func:`contimg_dask.casa.tasks.measures_report`
  checks the result instead.

This module must be used only inside CASA worker processes (see ``process.py``): importing
casatools next to python-casacore in one process has crashed other pipelines.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

from contimg_dask.casa.measures_dir import ensure_measures_dir
from contimg_dask.errors import CasaSetupError


def casacore_measures_dir() -> Path:
    """The measures data shipped in python-casacore's wheel (without importing casacore)."""
    spec = importlib.util.find_spec("casacore")
    if spec is None or not spec.submodule_search_locations:
        raise CasaSetupError("python-casacore is not installed: it provides CASA's measures "
                             "data (pip install python-casacore)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (data / "geodetic" / "IERSeop2000").is_dir():
        raise CasaSetupError(f"no measures data in {data} (geodetic/IERSeop2000 missing)",
                             file=data)
    return data


def configure_casa(log_dir: Path, cache_dir: Path,
                   observatories: dict[str, list[float]]) -> Path:
    """Point CASA at offline measures data, its log and cache at our directories.

    ``observatories`` maps names to WGS84 ``[longitude_rad, latitude_rad, height_m]`` to
    register in CASA's Observatories table. Must run before ``casatools`` is imported in this
    process. Returns the CASA log file.
    """
    if "casatools" in sys.modules:
        raise CasaSetupError("casatools was imported before configure_casa(): CASA would "
                             "already have looked for (and tried to download) measures data")
    measures = ensure_measures_dir(cache_dir, casacore_measures_dir(), observatories)
    log_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir / "matplotlib"))
    logfile = log_dir / f"casa-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}.log"

    from casaconfig import config

    config.measurespath = str(measures)
    config.datapath = [str(measures)]
    config.measures_auto_update = False
    config.data_auto_update = False
    config.logfile = str(logfile)
    config.cachedir = str(cache_dir)
    config.startupfile = str(cache_dir / "startup.py")
    config.casaconfig_verbose = 0
    config.nologger = True
    config.nogui = True
    return logfile
