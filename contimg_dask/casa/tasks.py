"""Functions that run inside a CASA worker process (see ``process.py``).

They import casatools/casatasks lazily, after ``configure_casa`` has run, and return plain
Python data.
"""

from __future__ import annotations

from typing import Any


def measures_report(observatories: list[str]) -> dict[str, Any]:
    """Where CASA found its measures data, and the positions it has for ``observatories``."""
    import casatools

    me = casatools.measures()
    ctsys = casatools.ctsys
    result: dict[str, Any] = {
        "casatools_version": casatools.version_string(),
        "measures_path": ctsys.rundata() if hasattr(ctsys, "rundata") else None,
        "iers_table": ctsys.resolve("geodetic/IERSeop2000"),
        "observatories_table": ctsys.resolve("geodetic/Observatories"),
        "observatories": {},
    }
    for name in observatories:
        position = me.observatory(name)
        entry: dict[str, Any] = {"found": bool(position)}
        if position:
            xyz = me.addxvalue(me.measure(position, "ITRF"))
            entry["itrf_m"] = [float(v) for v in xyz["value"]]
            entry["frame"] = position["refer"]
        result["observatories"][name] = entry
    me.done()
    return result
