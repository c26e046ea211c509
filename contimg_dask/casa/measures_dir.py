"""Build the pipeline's own CASA measures directory, offline.

python-casacore's wheel ships CASA's measures data (``casacore/data``). Its Observatories
table has no DSA_110 entry, and its OVRO_MMA entry is stored as ``Type ITRF`` with a geodetic
height (1188 m) in the ``Height`` column, which casacore reads as a geocentric radius: CASA
places "OVRO_MMA" 1188 m from the Earth's centre. We therefore build, once per cache
directory, a measures directory that links every table of the package's data except
``geodetic/Observatories``, which is copied with OVRO_MMA corrected to WGS84 and DSA_110 added,
both at the configured array reference.

The table is edited with python-casacore in a separate process (``python -m
contimg_dask.casa.measures_dir``), never next to casatools.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from contimg_dask.errors import CasaSetupError

MARKER = "contimg-measures.json"
LAYOUT_VERSION = 1


def _marker_content(source: Path, observatories: dict[str, list[float]]) -> dict:
    return {"layout": LAYOUT_VERSION, "source": str(source), "observatories": observatories}


def ensure_measures_dir(cache_dir: Path, source: Path,
                        observatories: dict[str, list[float]]) -> Path:
    """Return ``cache_dir/measures``, building it if absent or stale.

    ``observatories`` maps names to WGS84 ``[longitude_rad, latitude_rad, height_m]``.
    Built under a temporary name and renamed, so concurrent workers never see half of it.
    """
    target = cache_dir / "measures"
    wanted = _marker_content(source, observatories)
    marker = target / MARKER
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="measures-", dir=cache_dir))
    try:
        (build / "ephemerides").symlink_to(source / "ephemerides")
        geodetic = build / "geodetic"
        geodetic.mkdir()
        for entry in (source / "geodetic").iterdir():
            if entry.name != "Observatories":
                (geodetic / entry.name).symlink_to(entry)
        shutil.copytree(source / "geodetic" / "Observatories", geodetic / "Observatories")
        result = subprocess.run(
            [sys.executable, "-m", "contimg_dask.casa.measures_dir",
             str(geodetic / "Observatories"), json.dumps(observatories)],
            capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise CasaSetupError(f"could not edit the Observatories table: {result.stderr}",
                                 file=geodetic / "Observatories")
        (build / MARKER).write_text(json.dumps(wanted))
        stale = None
        if target.exists():
            stale = cache_dir / f"stale-{os.getpid()}"
            target.rename(stale)
        try:
            build.rename(target)
        except OSError:
            if not (target / MARKER).exists():  # not another worker's finished build
                raise
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
    return target


def _set_observatories(table_path: str, observatories: dict[str, list[float]]) -> None:
    """Write WGS84 rows for ``observatories`` into the table (python-casacore)."""
    import math

    from casacore.tables import table

    from contimg_dask.telescope.geodesy import geodetic_to_ecef

    with table(table_path, readonly=False, ack=False) as tab:
        names = list(tab.getcol("Name"))
        for name, (lon, lat, height) in observatories.items():
            if name in names:
                row = names.index(name)
            else:
                tab.addrows(1)
                row = tab.nrows() - 1
                names.append(name)
            x, y, z = geodetic_to_ecef(lon, lat, height)
            tab.putcell("Name", row, name)
            tab.putcell("Type", row, "WGS84")
            tab.putcell("Long", row, math.degrees(lon))
            tab.putcell("Lat", row, math.degrees(lat))
            tab.putcell("Height", row, height)
            tab.putcell("X", row, float(x))
            tab.putcell("Y", row, float(y))
            tab.putcell("Z", row, float(z))
            tab.putcell("Source", row, "contimg-dask configuration (telescope.reference)")
            tab.putcell("Comment", row, "DSA-110 array reference, WGS84")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("table")
    parser.add_argument("observatories", help="JSON {name: [lon_rad, lat_rad, height_m]}")
    args = parser.parse_args()
    _set_observatories(args.table, json.loads(args.observatories))


if __name__ == "__main__":
    main()
