"""Science test of calibration, end to end: solve on a calibrator transit, apply to a later
block of the same declination strip (20 min on, the calibrator near the beam's first null),
export, image with CASA tclean.

The instrument corrupts both blocks alike (antenna gains of 10 % rms amplitude and 60 deg rms
phase, drifting; bandpass ripples and residual delays); the sky is the calibrator (3C147 from
the packaged catalogue) plus the simulator's random sources. Every target source brighter
than 0.15 Jy (apparent) within 1.5 deg of the centre must image within 1/10 of the
synthesised beam of its true position, with its peak within 5 % of the flux the simulator
applied. Uncalibrated, the same data give no such sources (checked on the DATA column).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from contimg_dask.casa import run_casa
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.outputs.exports import export_block
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.io.store.solutions import read_solutions
from contimg_dask.pipeline.calibrate_apply import apply_solutions
from contimg_dask.pipeline.calibrate_solve import solve_block
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.testing.casa_tasks import tclean_and_fit
from tests.helpers import expected_peak, make_config, read_truth

pytestmark = [pytest.mark.slow, pytest.mark.casa]

MIN_APPARENT_JY = 0.15
MAX_OFFSET_DEG = 1.5


def test_calibrated_target_block_images_true_positions_and_fluxes(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"simulation.presets.small.n_antennas": 48})
    summaries = simulate_blocks(config, tmp_path / "incoming", SimulationOptions(
        preset="small", n_blocks=5, seed=28, transit="3C147", rfi=False))
    summaries = [summaries[0], summaries[4]]
    calibrator, target = (
        ingest_block([Path(f) for f in s["files"]], tmp_path / f"block{i}.zarr", config)
        for i, s in enumerate(summaries))
    solve_block(calibrator, config, tmp_path / "solutions.zarr")
    assert read_solutions(tmp_path / "solutions.zarr").attrs["contimg"]["calibrator"][
        "name"] == "3C147"
    apply_solutions(target, tmp_path / "solutions.zarr", config)
    ms = export_block(target, tmp_path / "target.ms", "ms", config)

    truth = read_truth(Path(summaries[1]["truth"]))
    geometry = read_geometry(target)
    mid = len(truth["time_unix"]) // 2
    centre = SkyCoord(truth["phase_centre_icrs_ra_rad"][mid] * u.rad,
                      truth["phase_centre_icrs_dec_rad"][mid] * u.rad)
    selected = []
    for source in truth["sources"]:
        position = SkyCoord(source["ra_deg"] * u.deg, source["dec_deg"] * u.deg)
        peak = expected_peak(source, truth, geometry.freq_hz)
        if position.separation(centre).deg < MAX_OFFSET_DEG and peak > MIN_APPARENT_JY:
            selected.append((source, position, peak))
    assert len(selected) >= 3, "the test needs sources to measure"

    regions = [f"centerbox[[{s['ra_deg']}deg, {s['dec_deg']}deg], [120arcsec, 120arcsec]]"
               for s, _, _ in selected]
    params = {"imsize": [1536, 1536], "cell": "8arcsec", "gridder": "wproject",
              "wprojplanes": -1, "weighting": "natural", "niter": 2000, "threshold": "1mJy",
              "specmode": "mfs", "stokes": "I", "deconvolver": "hogbom", "pblimit": -1,
              "datacolumn": "corrected",
              "phasecenter": f"ICRS {centre.ra.deg}deg {centre.dec.deg}deg"}
    result = run_casa(config, tclean_and_fit, str(ms), str(tmp_path / "image"),
                      str(tmp_path / "image.fits"), regions, params)
    beam_arcsec = result["beam"]["minor_arcsec"]
    for (source, position, peak), fit in zip(selected, result["fits"], strict=True):
        assert fit["converged"], source["name"]
        found = SkyCoord(fit["ra_rad"] * u.rad, fit["dec_rad"] * u.rad)
        print(f"{source['name']}: offset {position.separation(found).arcsec:.2f} arcsec "
              f"(beam {beam_arcsec:.1f}), peak {fit['peak_jy_per_beam']:.4f} / {peak:.4f} Jy")
        assert position.separation(found).arcsec < beam_arcsec / 10, source["name"]
        assert fit["peak_jy_per_beam"] == pytest.approx(peak, rel=0.05), source["name"]

    raw = run_casa(config, tclean_and_fit, str(ms), str(tmp_path / "raw"),
                   str(tmp_path / "raw.fits"), regions[:1],
                   {**params, "datacolumn": "data", "niter": 0})
    assert raw["fits"][0]["peak_jy_per_beam"] < 0.5 * selected[0][2]
