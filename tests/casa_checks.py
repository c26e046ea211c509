"""Functions that run inside a CASA worker process for the tests (verification only).

They are pickled by reference, so the worker must import this module: tests that use them
put the repository root on PYTHONPATH (fixture ``casa_worker_imports_tests``). They import
casatools/casatasks lazily and return plain Python data.
"""

from __future__ import annotations

from typing import Any


def ms_conventions(vis: str) -> dict[str, Any]:
    """What CASA's ``msmetadata`` and ``listobs`` read from a Measurement Set's metadata:
    the telescope, the position CASA places it at (ITRF, m), the row count, correlation
    types, per-window channel frequencies and widths (Hz), the integration
    times (MJD seconds, UTC) and exposure (s), the antenna table (names, stations, ITRF
    positions in m, dish diameters in m) and the field table (names, ICRS phase centre)."""
    import casatasks
    import casatools

    msmd = casatools.msmetadata()
    me = casatools.measures()
    msmd.open(vis)
    try:
        n_ant = msmd.nantennas()
        positions = []
        for i in range(n_ant):
            pos = me.measure(msmd.antennaposition(i), "ITRF")
            positions.append([float(v) for v in me.addxvalue(pos)["value"]])
        phase = msmd.phasecenter(0)
        exposure = msmd.exposuretime(scan=1, spwid=0, polid=0)
        telescope = msmd.observatorynames()[0]
        observatory = me.observatory(telescope)
        result = {
            "telescope": telescope,
            "observatory_itrf_m": ([float(v) for v in me.addxvalue(
                me.measure(observatory, "ITRF"))["value"]] if observatory else None),
            "nrows": int(msmd.nrows()),
            "corr_types": [int(c) for c in msmd.corrtypesforpol(0)],
            "n_spw": int(msmd.nspw()),
            "chan_freqs_hz": [[float(f) for f in msmd.chanfreqs(s)] for s in range(msmd.nspw())],
            "chan_widths_hz": [[float(f) for f in msmd.chanwidths(s)]
                               for s in range(msmd.nspw())],
            "times_mjd_s": [float(t) for t in msmd.timesforspws(0)],
            "exposure_s": float(casatools.quanta().convert(exposure, "s")["value"]),
            "antenna_names": list(msmd.antennanames()),
            "antenna_stations": list(msmd.antennastations()),
            "antenna_itrf_m": positions,
            "antenna_diameters_m": [float(casatools.quanta().convert(
                msmd.antennadiameter(i), "m")["value"]) for i in range(n_ant)],
            "field_names": list(msmd.fieldnames()),
            "phase_centre": {"ra_rad": float(phase["m0"]["value"]),
                             "dec_rad": float(phase["m1"]["value"]),
                             "frame": phase["refer"]},
        }
    finally:
        msmd.close()
        me.done()
    summary = casatasks.listobs(vis=vis, verbose=True, listfile="")
    scan = summary["scan_1"]["0"]
    result["listobs"] = {"begin_mjd_d": float(scan["BeginTime"]),
                         "end_mjd_d": float(scan["EndTime"]),
                         "integration_s": float(scan["IntegrationTime"]),
                         "nfields": int(summary["nfields"])}
    return result


def applycal_calibrated_weights(vis: str, gaintables: list[str], interp: list[str]
                                ) -> dict[str, Any]:
    """``applycal`` with ``calwt=True`` in place, then CORRECTED_DATA, WEIGHT, FLAG and the
    row columns as (row, channel, pol) / (row, pol) arrays."""
    import casatasks
    import casatools
    import numpy as np

    casatasks.applycal(vis=vis, gaintable=gaintables, interp=interp, calwt=True,
                       flagbackup=False)
    tb = casatools.table()
    tb.open(vis)
    try:  # casatools gives (pol, chan, row) / (pol, row): return row first
        return {name: np.asarray(tb.getcol(name)).T for name in (
            "CORRECTED_DATA", "WEIGHT", "FLAG", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID")}
    finally:
        tb.close()
