"""Science tests of the image stage against the simulator's truth, with both engines.

Small blocks (48 antennas, 8 channels per subband, 1280 x 10" images) keep CI fast. The
simulated blocks carry no instrumental gains (the calibration path is tested end to end in
test_calibrated_imaging.py), so they are imaged with ``imaging.require_calibration: false``.

- Sources up to 1.5 deg from the centre, Airy beam applied by the simulator along the drift:
  fitted positions within 0.1 synthesised beam of the truth; PB-corrected peaks within 2 % of
  the true flux density at the image's reference frequency (the flagged-weighted mean
  frequency of the block), S(nu_ref) = S_1.4GHz (nu_ref / 1.4 GHz)^alpha.
- A 10 Jy calibrator (alpha -0.75) at the centre: dynamic range >= 1000, no negative deeper
  than 5 sigma (the data beam-tracked towards it: its apparent flux held constant through
  the drift); with a second bright source (5 Jy, 0.56 deg away, held constant by the drift
  model) none deeper than 16 sigma (the best measured, 14; 23.5 without the drift model).
- A source-free block: noise within 1.5x of the radiometer equation for the weighting used
  (docs/imaging.md), computed here from the MS's own UVWs and flags.
- WSClean on the same block agrees with tclean: peaks within 2 %, positions within 0.05 beam.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.science.skymodel import PointSource, write_catalog
from contimg_dask.simulate import SimulationOptions, plan_blocks, simulate_blocks
from contimg_dask.stages.contract import BlockRef, StageResult
from contimg_dask.stages.image import ImageStage
from tests.helpers import make_config, read_truth
from tests.image_fits import fit_point_source, read_image

# tclean with mtmfs and w-projection: minutes per image, more on a shared machine.
pytestmark = [pytest.mark.slow, pytest.mark.casa, pytest.mark.timeout(3600)]

# (east offset deg, north offset deg, flux Jy at 1.4 GHz) from the block's mid-time centre.
OFFSETS = [(0.0, 0.0, 3.0), (1.5, 0.0, 2.0), (-0.9, 0.6, 2.5), (0.3, -1.2, 4.0),
           (-0.5, -0.7, 1.5)]
# 10": the 48 antennas' longest baselines reach |v| = 9,660 wavelengths, inside the uv grid
# (1 / (2 cell) = 10,310); at 12" they fell beyond its edge and aliased into stripes of 1.4 %
# of a bright source's peak (75 sigma), which the stage now refuses.
IMAGING = {"imaging.require_calibration": False, "imaging.imsize": 1280,
           "imaging.cell_arcsec": 10.0, "imaging.niter": 1000,
           # mtmfs with w-projection needs ~8 major cycles here: minutes on a shared machine.
           "casa.task_timeout_s": 3600.0}


def _config(root: Path, catalog: Path, **overrides: object):
    return make_config(root, **{"simulation.presets.small.n_antennas": 48,
                                "calibration.catalog": str(catalog), **IMAGING, **overrides})


def _simulate(root: Path, sources: list[tuple[float, float, float, float]], seed: int,
              noise: bool = True) -> tuple[BlockRef, dict, Path]:
    """A small block with point sources at (east deg, north deg, Jy at 1.4 GHz, alpha) from
    the block's centre; returns the block, its truth and the catalogue written."""
    options = SimulationOptions(preset="small", random_sources=False, noise=noise,
                                gains=False, rfi=False, seed=seed)
    config = _config(root, root / "sky.csv")
    centre = plan_blocks(config, options)[0].truth
    ra0 = np.degrees(np.mean(centre["phase_centre_icrs_ra_rad"][11:13]))
    dec0 = np.degrees(np.mean(centre["phase_centre_icrs_dec_rad"]))
    catalog = [PointSource(f"S{i}", ra0 + dx / np.cos(np.radians(dec0)), dec0 + dy, flux,
                           1.4e9, alpha) for i, (dx, dy, flux, alpha) in enumerate(sources)]
    write_catalog(catalog, root / "sky.csv")
    (summary,) = simulate_blocks(config, root / "incoming",
                                 dataclasses.replace(options, catalog=root / "sky.csv"))
    store = ingest_block([Path(f) for f in summary["files"]], root / "block.zarr", config)
    return BlockRef(read_geometry(store).block_id, store), read_truth(
        Path(summary["truth"])), root / "sky.csv"


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BlockRef, dict, Path]:
    root = tmp_path_factory.mktemp("field")
    block, truth, catalog = _simulate(root, [(*o, -0.7) for o in OFFSETS], seed=5)
    return root, block, truth, catalog


def _image(root: Path, block: BlockRef, catalog: Path, engine: str, **overrides: object
           ) -> StageResult:
    config = _config(root, catalog, **{"imaging.engine": engine, **overrides})
    return ImageStage(root / f"images-{engine}").run(block, config)


@pytest.fixture(scope="module")
def tclean_field(field: tuple) -> StageResult:
    root, block, _, catalog = field
    return _image(root, block, catalog, "tclean")


@pytest.fixture(scope="module")
def wsclean_field(field: tuple) -> StageResult:
    root, block, _, catalog = field
    return _image(root, block, catalog, "wsclean")


def _true_flux(source: dict, nu_ref: float) -> float:
    return source["flux_jy"] * source["flux_scale"] * (
        nu_ref / source["ref_freq_hz"]) ** source["spectral_index"]


def _check_positions_and_fluxes(result: StageResult, truth: dict) -> None:
    """Every source within 0.1 beam of its true position and 2 % of its true flux density
    (all sources measured and printed before the verdict)."""
    figures = result.figures
    beam_arcsec = figures["beam_minor_arcsec"]
    nu_ref = figures["reference_frequency_hz"]
    failures = []
    for source in truth["sources"]:
        fit = fit_point_source(result.product("image_pbcor").path, source["ra_deg"],
                               source["dec_deg"])
        offset = SkyCoord(source["ra_deg"] * u.deg, source["dec_deg"] * u.deg).separation(
            SkyCoord(fit.ra_deg * u.deg, fit.dec_deg * u.deg)).arcsec
        expected = _true_flux(source, nu_ref)
        line = (f"{figures['engine']} {source['name']}: offset {offset:.2f}\" (beam "
                f"{beam_arcsec:.1f}\"), PB-corrected {fit.peak:.4f} Jy / true {expected:.4f} "
                f"({100 * (fit.peak / expected - 1):+.2f} %)")
        print(line)
        if offset >= 0.1 * beam_arcsec or abs(fit.peak / expected - 1) > 0.02:
            failures.append(line)
    assert not failures, failures


def test_tclean_positions_and_pb_corrected_fluxes(field: tuple,
                                                  tclean_field: StageResult) -> None:
    _check_positions_and_fluxes(tclean_field, field[2])


def test_products_carry_wcs_beam_provenance_and_figures(field: tuple,
                                                        tclean_field: StageResult) -> None:
    result = tclean_field
    kinds = {p.kind for p in result.products}
    assert {"image", "image_pbcor", "residual", "pb", "model", "png"} <= kinds
    assert all(p.path.exists() for p in result.products)
    assert not any(".tmp-" in p.name for p in result.products[0].path.parent.parent.iterdir())
    _, header, wcs = read_image(result.product("image").path)
    assert wcs.wcs.ctype[0].startswith("RA---SIN")
    assert 20 / 3600 < header["BMIN"] <= header["BMAJ"] < 120 / 3600
    assert header["CT_BLOCK"] == field[1].block_id
    assert header["CT_CALIB"] is False  # imaged with require_calibration false
    assert header["CT_NOISE"] == pytest.approx(result.figures["noise_jy"], rel=1e-6)
    pb, pb_header, _ = read_image(result.product("pb").path)
    assert pb_header["BMAJ"] == header["BMAJ"]
    assert pb.max() == pytest.approx(0.955, abs=0.01)  # drift-averaged, not 1 (dec 16 deg)
    pbcor, _, _ = read_image(result.product("image_pbcor").path)
    assert np.all(np.isnan(pbcor[pb < 0.2])) and np.all(np.isfinite(pbcor[pb >= 0.2]))
    sidecar = json.loads(result.product("provenance").path.read_text())
    assert sidecar["provenance"]["config_hash"] == result.provenance.config_hash
    assert sidecar["provenance"]["versions"]["casatools"] != "absent"
    assert "contimg" in sidecar["provenance"]["command"]
    assert sidecar["figures"]["engine_version"].startswith("CASA")


def test_wsclean_positions_and_pb_corrected_fluxes(field: tuple,
                                                   wsclean_field: StageResult) -> None:
    _check_positions_and_fluxes(wsclean_field, field[2])
    assert "WSClean" in wsclean_field.figures["engine_version"]


def test_engines_agree_on_fluxes_and_positions(field: tuple, tclean_field: StageResult,
                                               wsclean_field: StageResult) -> None:
    """On MSs of different layouts: tclean's one window per subband, WSClean's two."""
    assert tclean_field.figures["spectral_windows"] == 16
    assert wsclean_field.figures["spectral_windows"] == 2
    beam_arcsec = tclean_field.figures["beam_minor_arcsec"]
    for source in field[2]["sources"]:
        fits = [fit_point_source(r.product("image_pbcor").path, source["ra_deg"],
                                 source["dec_deg"]) for r in (tclean_field, wsclean_field)]
        offset = SkyCoord(fits[0].ra_deg * u.deg, fits[0].dec_deg * u.deg).separation(
            SkyCoord(fits[1].ra_deg * u.deg, fits[1].dec_deg * u.deg)).arcsec
        print(f"{source['name']}: tclean {fits[0].peak:.4f} Jy, wsclean {fits[1].peak:.4f} "
              f"Jy, {offset:.2f}\" apart")
        assert fits[1].peak == pytest.approx(fits[0].peak, rel=0.02), source["name"]
        assert offset < 0.05 * beam_arcsec, source["name"]


@pytest.fixture(scope="module")
def calibrator_field(tmp_path_factory: pytest.TempPathFactory) -> StageResult:
    """A 10 Jy source with spectral index -0.75 at the centre, imaged with tclean."""
    root = tmp_path_factory.mktemp("calibrator")
    block, _, catalog = _simulate(root, [(0.0, 0.0, 10.0, -0.75)], seed=11)
    result = _image(root, block, catalog, "tclean", **{"imaging.imsize": 512})
    print({k: result.figures[k] for k in ("deconvolver", "noise_jy", "peak_jy", "min_jy",
                                          "dynamic_range", "deepest_negative_sigma",
                                          "beam_tracked_source")})
    return result


def test_bright_calibrator_field_deconvolves_without_divergence(
        calibrator_field: StageResult) -> None:
    """mtmfs is chosen for the bright source; no divergence: dynamic range >= 1000 and the
    peak within 5 % of the drift-averaged apparent flux (0.956 x S(nu_ref) at the centre)."""
    f = calibrator_field.figures
    assert f["deconvolver"] == "mtmfs"
    assert f["dynamic_range"] >= 1000
    expected = 0.956 * 10.0 * (f["reference_frequency_hz"] / 1.4e9) ** -0.75
    assert f["peak_jy"] == pytest.approx(expected, rel=0.05)


def test_bright_calibrator_field_has_no_negative_artefact_deeper_than_5_sigma(
        calibrator_field: StageResult) -> None:
    """The data are beam-tracked towards the calibrator (its apparent flux held constant
    through the drift) and the cell samples every baseline: no stripes."""
    assert calibrator_field.figures["beam_tracked_source"] == "S0"
    assert calibrator_field.figures["deepest_negative_sigma"] < 5


# A second bright source 0.56 deg from the calibrator: its apparent flux changes by ~35 %
# through the block (the drift takes it from 0.3 to 1.15 deg off the pointing).
SECOND_SOURCE = (0.5, 0.25, 5.0, -0.7)


def test_second_bright_source_leaves_no_negative_deeper_than_16_sigma(
        tmp_path: Path) -> None:
    """10 Jy at the centre (beam-tracked) and 5 Jy beside it (held constant by the drift
    model). Measured on 2026-11-30 (tclean, CASA's w-planes): -14.0 sigma (-12.6 mJy, noise
    0.90 mJy/beam) with the drift model, -23.5 sigma (-24.3 mJy, noise 1.03) without it. The
    5 sigma the issue asks for is not reached: what remains sits within a few beams of the
    second source at 0.3 % of its flux in both engines, after its time variation is removed
    exactly (tests/integration/test_drift_model_ms.py). Measured on 2026-12-01: not its
    spectrum (flat: -14.8 sigma); its position on the grid in part (on a pixel centre: -11.3
    sigma; a 5" cell: -10.7 sigma); past niter 1000 CLEAN diverges on it (-325 sigma at
    5000); docs/imaging.md."""
    block, _, catalog = _simulate(tmp_path, [(0.0, 0.0, 10.0, -0.75), SECOND_SOURCE], seed=13)
    result = _image(tmp_path, block, catalog, "tclean", **{"imaging.imsize": 512})
    f = result.figures
    print({k: f[k] for k in ("noise_jy", "peak_jy", "min_jy", "dynamic_range",
                             "deepest_negative_sigma", "beam_tracked_source",
                             "drift_model_sources")})
    assert f["beam_tracked_source"] == "S0" and f["drift_model_sources"] == "S1"
    assert f["deepest_negative_sigma"] < 16


def radiometer_noise(ms: Path, sefd_jy: float, imsize: int, cell_arcsec: float,
                     robust: float) -> tuple[float, float]:
    """Stokes I image noise (Jy/beam) from the radiometer equation for natural and for
    Briggs weighting, from the MS's UVWs, flags, weights, channel widths and each row's
    integration time (rows averaged in time have longer ones).

    Per visibility and polarization, each of real and imaginary part has
    sigma_v = SEFD / sqrt(2 dnu tau); Stokes I = (XX + YY) / 2 has sigma_v / sqrt(2); an image
    made with weights w_i has sigma = sigma_I sqrt(sum w_i^2) / sum w_i, the natural weights
    being the rows' data weights W_i (the writer sums them over averaged samples, so they go
    as tau). Briggs weights: w_i = W_i / (1 + D_k f^2), D_k the sum of the data weights in
    the uv cell (conjugates included), f^2 = (5 10^-R)^2 / (sum_k D_k^2 / sum_k D_k)."""
    from casacore.tables import table

    with table(str(ms), ack=False) as t:
        uvw = t.getcol("UVW")
        flag = t.getcol("FLAG")[:, :, 0] | t.getcol("FLAG")[:, :, -1]
        ddid = t.getcol("DATA_DESC_ID")
        tau = t.getcol("EXPOSURE")
        data_weight = t.getcol("WEIGHT")[:, 0]
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
    with table(f"{ms}::SPECTRAL_WINDOW", ack=False) as t:
        freqs, widths = t.getcol("CHAN_FREQ"), np.abs(t.getcol("CHAN_WIDTH"))
    with table(f"{ms}::DATA_DESCRIPTION", ack=False) as t:
        spw_of = t.getcol("SPECTRAL_WINDOW_ID")
    keep = (a1 != a2)[:, None] & ~flag
    rows, chans = np.nonzero(keep)
    spw = spw_of[ddid[rows]]
    lam = 299792458.0 / freqs[spw, chans]
    sigma_i = sefd_jy / np.sqrt(2 * widths[spw, chans] * tau[rows]) / np.sqrt(2)
    w_data = data_weight[rows] / data_weight[rows].max()
    natural = float(np.sqrt(np.sum((w_data * sigma_i) ** 2)) / np.sum(w_data))
    du = 1.0 / (imsize * np.radians(cell_arcsec / 3600))
    iu = np.round(uvw[rows, 0] / lam / du).astype(int)
    iv = np.round(uvw[rows, 1] / lam / du).astype(int)
    cells = np.concatenate([iu + 1j * iv, -iu - 1j * iv])
    _, inverse = np.unique(cells, return_inverse=True)
    sums = np.bincount(inverse, weights=np.concatenate([w_data, w_data]))
    density = sums[inverse[:len(rows)]]
    f2 = (5 * 10 ** -robust) ** 2 / (np.sum(sums ** 2) / sums.sum())
    w = w_data / (1 + density * f2)
    briggs = float(np.sqrt(np.sum((w * sigma_i) ** 2)) / np.sum(w))
    return natural, briggs


def test_noise_of_source_free_block_follows_the_radiometer_equation(tmp_path: Path) -> None:
    block, _, catalog = _simulate(tmp_path, [], seed=21)
    config = _config(tmp_path, catalog, **{"imaging.imsize": 512})
    result = ImageStage(tmp_path / "images", keep_ms=True).run(block, config)
    natural, briggs = radiometer_noise(result.product("ms").path, config.telescope.sefd_jy,
                                       512, config.imaging.cell_arcsec,
                                       config.imaging.robust)
    measured = result.figures["noise_jy"]
    print(f"noise {1e3 * measured:.3f} mJy/beam; radiometer natural {1e3 * natural:.3f}, "
          f"Briggs {config.imaging.robust} {1e3 * briggs:.3f}")
    assert briggs / 1.5 < measured < 1.5 * briggs
