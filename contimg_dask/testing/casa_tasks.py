"""CASA's own answers, for comparison with ours: functions that run inside a CASA worker
process (``contimg_dask.casa.run_casa``), used by tests and benchmarks only.

They import casatools/casatasks lazily, after ``configure_casa`` has run, and return plain
Python data.
"""

from __future__ import annotations

from typing import Any


def listobs_summary(vis: str) -> dict[str, Any]:
    """Run ``casatasks.listobs`` on ``vis`` and return its summary dictionary."""
    import casatasks

    return casatasks.listobs(vis=vis, verbose=True, listfile="")


def ms_metadata(vis: str) -> dict[str, Any]:
    """What CASA reads from a Measurement Set: telescope, its position, antennas (ITRF m),
    the phase centre, spectral windows and the row count."""
    import casatools

    msmd = casatools.msmetadata()
    me = casatools.measures()
    msmd.open(vis)
    try:
        telescope = msmd.observatorynames()[0]
        antennas = list(msmd.antennanames())
        positions = []
        for i in range(len(antennas)):
            pos = me.measure(msmd.antennaposition(i), "ITRF")
            positions.append([float(v) for v in me.addxvalue(pos)["value"]])
        observatory = me.observatory(telescope)
        phase = msmd.phasecenter(0)
        return {
            "telescope": telescope,
            "observatory_itrf_m": ([float(v) for v in me.addxvalue(
                me.measure(observatory, "ITRF"))["value"]] if observatory else None),
            "antennas": antennas,
            "antenna_itrf_m": positions,
            "phase_centre": {"ra_rad": float(phase["m0"]["value"]),
                             "dec_rad": float(phase["m1"]["value"]),
                             "frame": phase["refer"]},
            "spw_chan_freqs_hz": [list(map(float, msmd.chanfreqs(s)))
                                  for s in range(msmd.nspw())],
            "nrows": int(msmd.nrows()),
        }
    finally:
        msmd.close()
        me.done()


def casa_uvw(vis: str, work_copy: str) -> Any:
    """UVWs recomputed by CASA (``fixvis``, its measures, for the field's phase centre) into
    ``work_copy``, as an (nrow, 3) array, with the UVWs originally written."""
    import casatasks
    import casatools
    import numpy as np

    tb = casatools.table()
    tb.open(vis)
    written = np.array(tb.getcol("UVW")).T
    tb.close()
    casatasks.fixvis(vis=vis, outputvis=work_copy, reuse=False)
    tb.open(work_copy)
    recomputed = np.array(tb.getcol("UVW")).T
    tb.close()
    return {"written": written, "casa": recomputed}


def tclean_and_fit(vis: str, imagename: str, fits_out: str, regions: list[str],
                   tclean_params: dict[str, Any]) -> dict[str, Any]:
    """Image with tclean, export the restored image to FITS, and fit a Gaussian (imfit) in
    each region. Returns the restoring beam and the fits (ICRS position in rad, peak Jy/beam);
    where imfit finds nothing, ``converged`` is False and the peak is the region's maximum.
    """
    import os

    import casatasks
    import casatools

    casatasks.tclean(vis=vis, imagename=imagename, **tclean_params)
    image = f"{imagename}.image"
    if not os.path.exists(image):  # mtmfs: the Taylor term 0 (the band-centre) image
        image = f"{imagename}.image.tt0"
    casatasks.exportfits(imagename=image, fitsimage=fits_out, overwrite=True)
    ia = casatools.image()
    ia.open(image)
    beam = ia.restoringbeam()
    ia.close()
    fits = []
    for region in regions:
        result = casatasks.imfit(imagename=image, region=region)
        if not result or "component0" not in result.get("results", {}):
            stats = casatasks.imstat(imagename=image, region=region)
            fits.append({"converged": False, "peak_jy_per_beam": float(stats["max"][0])})
            continue
        component = result["results"]["component0"]
        direction = component["shape"]["direction"]
        fits.append({
            "converged": bool(result["converged"][0]),
            "ra_rad": float(direction["m0"]["value"]),
            "dec_rad": float(direction["m1"]["value"]),
            "frame": direction["refer"],
            "peak_jy_per_beam": float(component["peak"]["value"]),
            "flux_jy": float(component["flux"]["value"][0]),
        })
    return {"beam": {"major_arcsec": float(beam["major"]["value"]) * (
        1.0 if beam["major"]["unit"] == "arcsec" else 60.0),
        "minor_arcsec": float(beam["minor"]["value"]) * (
            1.0 if beam["minor"]["unit"] == "arcsec" else 60.0)}, "fits": fits}


def solve_bandpass_and_gains(vis: str, bandpass_table: str, gain_table: str, refant: str,
                             gain_solint: str, minsnr: float) -> dict[str, Any]:
    """CASA's own solve against MODEL_DATA: ``bandpass`` (one solution per channel over the
    whole observation) then ``gaincal`` (amplitude and phase per ``gain_solint``) with the
    bandpass applied. Returns the wall time of each (s)."""
    import time

    import casatasks

    t0 = time.perf_counter()
    casatasks.bandpass(vis=vis, caltable=bandpass_table, solint="inf", combine="scan",
                       refant=refant, minsnr=minsnr, solnorm=False, bandtype="B")
    t1 = time.perf_counter()
    casatasks.gaincal(vis=vis, caltable=gain_table, solint=gain_solint, refant=refant,
                      calmode="ap", gaintype="G", minsnr=minsnr, gaintable=[bandpass_table])
    t2 = time.perf_counter()
    return {"bandpass_s": t1 - t0, "gaincal_s": t2 - t1}


def apply_tables(vis: str, gaintables: list[str], interp: list[str]) -> dict[str, Any]:
    """CASA ``applycal`` of ``gaintables`` (CORRECTED_DATA written, weights calibrated).
    Returns its wall time (s)."""
    import time

    import casatasks

    t0 = time.perf_counter()
    casatasks.applycal(vis=vis, gaintable=gaintables, interp=interp, calwt=True,
                       flagbackup=False)
    return {"applycal_s": time.perf_counter() - t0}


def ft_point_source(vis: str, componentlist: str, ra_rad: float, dec_rad: float,
                    flux_jy: float, ref_freq_hz: float, spectral_index: float) -> None:
    """CASA's model of one point source (Stokes I, power-law spectrum; no primary beam) in
    MODEL_DATA, by ``ft`` of a component list."""
    import casatasks
    import casatools

    cl = casatools.componentlist()
    cl.addcomponent(dir=f"ICRS {ra_rad}rad {dec_rad}rad", flux=flux_jy, fluxunit="Jy",
                    freq=f"{ref_freq_hz}Hz", shape="point", spectrumtype="spectral index",
                    index=spectral_index)
    cl.rename(componentlist)
    cl.close()
    casatasks.ft(vis=vis, complist=componentlist, usescratch=True)


def casa_apparent_hadec(mjd_s: list[float], ra_rad: float, dec_rad: float,
                        site_itrf_m: list[float]) -> dict[str, list[float]]:
    """CASA's measures for the J2000 direction (``ra_rad``, ``dec_rad``) seen from
    ``site_itrf_m`` at each epoch (UTC, MJD seconds): apparent topocentric hour angle and
    declination (HADEC), and the position angle of J2000 north in that frame (rad, east of
    apparent north), from the HADEC of a point 1e-5 rad north of the direction."""
    import math

    import casatools

    me, qa = casatools.measures(), casatools.quanta()
    me.doframe(me.position("ITRF", *(qa.quantity(v, "m") for v in site_itrf_m)))
    ha, dec, pa = [], [], []
    step = 1e-5
    for t in mjd_s:
        me.doframe(me.epoch("UTC", qa.quantity(t, "s")))
        here = me.measure(me.direction("J2000", qa.quantity(ra_rad, "rad"),
                                       qa.quantity(dec_rad, "rad")), "HADEC")
        north = me.measure(me.direction("J2000", qa.quantity(ra_rad, "rad"),
                                        qa.quantity(dec_rad + step, "rad")), "HADEC")
        h0, d0 = here["m0"]["value"], here["m1"]["value"]
        h1, d1 = north["m0"]["value"], north["m1"]["value"]
        # Offsets on the sky: east is decreasing hour angle.
        east = -(h1 - h0) * math.cos(d0)
        ha.append(h0)
        dec.append(d0)
        pa.append(math.atan2(east, d1 - d0))
    me.done()
    return {"ha": ha, "dec": dec, "pa": pa}


def mstransform_average(vis: str, outputvis: str, width: int) -> str:
    """CASA ``mstransform`` channel average of DATA by ``width`` within each spectral window
    (flagged samples excluded, ``keepflags``) into ``outputvis``."""
    import casatasks

    casatasks.mstransform(vis=vis, outputvis=outputvis, datacolumn="data", chanaverage=True,
                          chanbin=width, keepflags=True)
    return outputvis


def mstransform_channel_average(vis: str, outputvis: str, width: int) -> dict[str, Any]:
    """:func:`mstransform_average`, and the averaged MS's DATA, FLAG, WEIGHT_SPECTRUM (or
    WEIGHT) and channel frequencies and widths as CASA wrote them."""
    import casatools

    mstransform_average(vis, outputvis, width)
    tb = casatools.table()
    tb.open(outputvis)
    out = {name: tb.getcol(name) for name in ("DATA", "FLAG", "DATA_DESC_ID", "TIME",
                                              "ANTENNA1", "ANTENNA2")}
    out["WEIGHT"] = tb.getcol("WEIGHT_SPECTRUM" if "WEIGHT_SPECTRUM" in tb.colnames()
                              else "WEIGHT")
    tb.close()
    tb.open(f"{outputvis}/SPECTRAL_WINDOW")
    out["CHAN_FREQ"], out["CHAN_WIDTH"] = tb.getcol("CHAN_FREQ"), tb.getcol("CHAN_WIDTH")
    tb.close()
    return out


TIME_AVERAGE_COLUMNS = ("ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "TIME", "TIME_CENTROID",
                        "INTERVAL", "EXPOSURE", "UVW", "FLAG", "FLAG_ROW", "WEIGHT", "SIGMA")


def mstransform_time_average(vis: str, outputvis: str, timebin_s: float,
                             datacolumn: str = "data") -> dict[str, Any]:
    """CASA ``mstransform`` time average of ``datacolumn`` over bins of ``timebin_s`` seconds
    per baseline (``timespan`` left empty: bins break at scan and state boundaries; flagged
    samples excluded, ``keepflags``) into ``outputvis``, and the averaged MS's columns as
    CASA wrote them (casatools' axis order: rows last). DATA and, when written,
    CORRECTED_DATA, WEIGHT_SPECTRUM and SIGMA_SPECTRUM are included."""
    import casatasks
    import casatools

    casatasks.mstransform(vis=vis, outputvis=outputvis, datacolumn=datacolumn,
                          timeaverage=True, timebin=f"{timebin_s}s", keepflags=True)
    tb = casatools.table()
    tb.open(outputvis)
    try:
        names = set(tb.colnames())
        optional = [name for name in ("DATA", "CORRECTED_DATA", "WEIGHT_SPECTRUM",
                                      "SIGMA_SPECTRUM") if name in names]
        return {name: tb.getcol(name) for name in (*TIME_AVERAGE_COLUMNS, *optional)}
    finally:
        tb.close()
