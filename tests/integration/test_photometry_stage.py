"""Photometry end to end on synthetic image products: the stage under the contract, the
measurement and variability tables, re-measurement replacing an epoch, out-of-order epochs,
candidate and product events in a real SQLite state store, and bad input (catalogue, image,
too few references) giving clear, recorded errors or flagged epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contimg_dask.errors import ConfigError, InputError
from contimg_dask.ops.variability import SUM_COLUMNS, sums_from_lightcurves
from contimg_dask.photometry.record import lightcurve_matrix
from contimg_dask.photometry.run import photometer_images
from contimg_dask.photometry.tables import PhotometryTables, photometry_root
from contimg_dask.science.photometry_catalog import read_photometry_catalog
from contimg_dask.stages.contract import BlockRef
from contimg_dask.stages.image import product_directory
from contimg_dask.stages.registry import get_stage
from contimg_dask.state import open_state_store
from contimg_dask.testing.photometry_images import (
    SyntheticGrid,
    correlated_noise,
    point_sources,
    sky_of,
    write_image,
)
from tests.helpers import make_config

GRID = SyntheticGrid(size=256)
N_SOURCES, N_EPOCHS = 30, 12
VARIABLE = "S0"


@pytest.fixture(scope="module")
def sky(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A catalogue and 12 daily epochs with 5 % gain errors; S0 halves after epoch 6."""
    root = tmp_path_factory.mktemp("photometry")
    rng = np.random.default_rng(15)
    x = rng.uniform(20, 236, N_SOURCES)
    y = rng.uniform(20, 236, N_SOURCES)
    flux = np.exp(rng.uniform(np.log(0.02), np.log(0.5), N_SOURCES))
    flux[0] = 0.3
    # S0 where it is most isolated (a reference until it is seen to vary)
    gx, gy = np.meshgrid(np.arange(20, 237, 4.0), np.arange(20, 237, 4.0))
    clearance = np.hypot(gx.ravel()[:, None] - x[1:], gy.ravel()[:, None] - y[1:]).min(axis=1)
    x[0], y[0] = gx.ravel()[clearance.argmax()], gy.ravel()[clearance.argmax()]
    ra, dec = sky_of(GRID, x, y)
    names = [f"S{i}" for i in range(N_SOURCES)]
    pd.DataFrame({"name": names, "ra_deg": ra, "dec_deg": dec, "flux_jy": flux}).to_csv(
        root / "catalog.csv", index=False)
    cov = GRID.beam_cov_pixels()
    images = []
    for epoch in range(N_EPOCHS):
        f = flux * (1 + 0.05 * rng.standard_normal())
        if epoch >= 6:
            f[0] *= 0.5
        plane = point_sources((GRID.size,) * 2, cov, x, y, f) + correlated_noise(
            (GRID.size,) * 2, cov, 1e-3, rng)
        block = f"2026-02-{epoch + 1:02d}T12:00:00"
        directory = product_directory(root / "products" / "images", block)
        directory.mkdir(parents=True)
        images.append(write_image(directory / f"{directory.name}.image.pbcor.fits", GRID,
                                  plane, block, 1e-3))
    return {"root": root, "catalog": root / "catalog.csv", "images": images, "flux": flux}


def _config(root: Path, catalog: Path | None):
    config = make_config(root)
    return config.model_copy(update={"photometry": config.photometry.model_copy(
        update={"catalog": catalog})})


def test_stage_records_epochs_candidates_and_replaces_a_remeasured_epoch(
        sky: dict, tmp_path: Path) -> None:
    config = _config(sky["root"], sky["catalog"])
    config = config.model_copy(update={"paths": config.paths.model_copy(
        update={"state": tmp_path / "state"})})
    out = tmp_path / "photometry"
    stage = get_stage("photometry")
    assert stage.needs == ("image",)
    from contimg_dask.stages.photometry import PhotometryStage

    stage = PhotometryStage(images_root=sky["root"] / "products" / "images", out=out)
    blocks = [BlockRef(f"2026-02-{e + 1:02d}T12:00:00", tmp_path / "unused.zarr")
              for e in range(N_EPOCHS)]
    order = [0, 1, 2, 3, 4, 5, 7, 6, 8, 9, 10, 11]  # epoch 7 arrives before epoch 6
    results = [stage.run(blocks[e], config) for e in order]
    assert all(r.products[0].kind == "photometry" and r.products[0].path.is_file()
               for r in results)
    assert all(not r.figures["flagged"] for r in results)
    # the variable source served as a reference until its light curve showed it varies
    first_rows = pd.read_parquet(results[0].products[0].path).set_index("name")
    last_rows = pd.read_parquet(results[-1].products[0].path).set_index("name")
    assert first_rows.loc[VARIABLE, "reference"]
    assert not last_rows.loc[VARIABLE, "reference"] and last_rows["reference"].sum() >= 3
    tables = PhotometryTables(out)
    version = read_photometry_catalog(sky["catalog"]).version
    first = tables.variability(version).set_index("name")
    assert first.loc[VARIABLE, "candidate_kinds"] == "variable,two_epoch,"
    others = first.drop(index=VARIABLE)
    assert (others["candidate_kinds"] == "").all()  # the only candidate
    assert (first["n"] == N_EPOCHS).all()
    # The light-curve table: one product of the catalogue version's collection; each update
    # made from the catalogue and the measurement table it added (a record of constant
    # size), all of them together from every measurement table.
    lightcurves = [r.product("lightcurves") for r in results]
    assert {(p.path, p.collection) for p in lightcurves} == {
        (tables.variability_path(version), f"lightcurves-{version}")}
    assert [p.inputs for p in lightcurves] == [
        (str(sky["catalog"]), str(r.product("photometry").path)) for r in results]
    assert sorted({i for p in lightcurves for i in p.inputs[1:]}) == sorted(
        map(str, tables.measurement_files(version)))
    # normalised constant sources: their weighted means match the catalogue within 3 %
    bright = others[others["weighted_mean_jy"] > 0.05]
    truth = pd.read_csv(sky["catalog"]).set_index("name").loc[bright.index, "flux_jy"]
    assert np.abs(bright["weighted_mean_jy"] / truth - 1).max() < 0.03
    # measuring epoch 3 again replaces its rows: one table per image, the same raw fluxes,
    # and sums equal to those of the light curves as they now are (its normalisation may
    # differ: S0 is no longer a reference), not an extra epoch
    raw_before = pd.read_parquet(results[3].products[0].path)["flux_jy"]
    again = stage.run(blocks[3], config)
    assert again.figures["replaced"] is True
    assert len(tables.measurement_files(version)) == N_EPOCHS
    np.testing.assert_array_equal(pd.read_parquet(again.products[0].path)["flux_jy"],
                                  raw_before)
    second = tables.variability(version).set_index("name")
    assert (second["n"] == N_EPOCHS).all()
    names = second.index.to_numpy(str)
    rebuilt = sums_from_lightcurves(*lightcurve_matrix(tables.measurements(version), names),
                                    config.photometry.variability.m_min)
    for key in SUM_COLUMNS:
        np.testing.assert_allclose(second[key], rebuilt[key], rtol=1e-9, err_msg=key)
    state = open_state_store(config)
    try:
        events = state.events(count=1000)
    finally:
        state.close()
    candidates = [e.data for e in events if e.kind == "candidate"]
    assert sorted(c["kind"] for c in candidates) == ["two_epoch", "variable"]
    assert all(c["name"] == VARIABLE and "eta" in c["metrics"] for c in candidates)
    assert sum(e.kind == "product" for e in events) == N_EPOCHS + 1


def test_stage_without_catalogue_or_image_says_so(sky: dict, tmp_path: Path) -> None:
    stage = get_stage("photometry")
    block = BlockRef("2026-02-01T12:00:00", tmp_path / "unused.zarr")
    with pytest.raises(ConfigError, match=r"photometry\.catalog"):
        stage.run(block, _config(tmp_path, None))
    with pytest.raises(InputError, match="no image to measure"):
        stage.run(block, _config(tmp_path, sky["catalog"]))


@pytest.mark.parametrize(("content", "message"), [
    ("name,ra_deg,flux_jy\nA,10,1\n", "lacks the column\\(s\\) dec_deg"),
    ("name,ra_deg,dec_deg,flux_jy\nA,10,abc,1\n", "dec_deg is not a number in row\\(s\\) 2"),
    ("name,ra_deg,dec_deg,flux_jy\nA,400,10,1\n", "ra_deg is out of range"),
    ("name,ra_deg,dec_deg,flux_jy\nA,10,10,1\nA,11,10,1\n", "names must be unique"),
])
def test_bad_catalogues_are_refused_naming_the_problem(tmp_path: Path, content: str,
                                                       message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_photometry_catalog(path)
    assert info.value.file == str(path)


def test_bad_images_are_recorded_failures_and_damage_nothing(sky: dict,
                                                             tmp_path: Path) -> None:
    from astropy.io import fits

    config = _config(tmp_path, sky["catalog"])
    catalog = read_photometry_catalog(sky["catalog"])
    tables = PhotometryTables(photometry_root(config))
    good = sky["images"][0]
    no_beam = tmp_path / "nobeam.fits"
    with fits.open(good) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data
    del header["BMAJ"]
    fits.PrimaryHDU(data, header).writeto(no_beam)
    far = tmp_path / "far.fits"
    write_image(far, SyntheticGrid(size=256, ra_deg=300.0, dec_deg=-20.0), data, "2026-03-01",
                1e-3)
    state = open_state_store(config)
    try:
        done, failed = photometer_images([good, no_beam, far], catalog, config, tables, state)
        failures = state.failures()
    finally:
        state.close()
    assert len(done) == 1 and len(failed) == 2
    assert "no restoring beam" in failed[0].message and failed[0].file == str(no_beam)
    assert "falls on the image" in failed[1].message and failed[1].file == str(far)
    assert [f.input for f in failures] == [str(no_beam), str(far)]
    assert len(tables.measurement_files(catalog.version)) == 1


def test_an_epoch_with_too_few_references_is_flagged_not_used(sky: dict,
                                                             tmp_path: Path) -> None:
    config = _config(tmp_path, sky["catalog"])
    refs = config.photometry.references.model_copy(update={"min_flux_jy": 0.45})
    config = config.model_copy(update={"photometry": config.photometry.model_copy(
        update={"references": refs})})
    catalog = read_photometry_catalog(sky["catalog"])
    tables = PhotometryTables(tmp_path / "phot")
    done, failed = photometer_images(sky["images"][:1], catalog, config, tables)
    assert not failed and done[0].flagged and done[0].scale is None
    assert done[0].references < 3
    rows = pd.read_parquet(done[0].table)
    assert rows["norm_flux_jy"].isna().all() and rows["flux_jy"].notna().all()
    assert (tables.variability(catalog.version)["n"] == 0).all()


def test_a_catalogue_built_from_a_deep_image_finds_the_injected_sources(
        sky: dict, tmp_path: Path) -> None:
    # A deep image (noise 0.1 mJy) of the same sky: the segmentation catalogue holds every
    # injected source above 5 σ, within 1/5 beam of its position and 5 % of its flux, and
    # the catalogue is versioned and usable for forced photometry.
    from contimg_dask.photometry.catalog_build import build_catalog

    rng = np.random.default_rng(99)
    truth = pd.read_csv(sky["catalog"])
    from astropy.wcs import WCS

    x, y = WCS(GRID.header()).all_world2pix(truth.ra_deg, truth.dec_deg, 0)
    cov = GRID.beam_cov_pixels()
    deep = point_sources((GRID.size,) * 2, cov, x, y, truth.flux_jy.to_numpy()) + \
        correlated_noise((GRID.size,) * 2, cov, 1e-4, rng)
    image = write_image(tmp_path / "deep.image.pbcor.fits", GRID, deep, "2026-02-01", 1e-4)
    config = make_config(tmp_path)
    built = build_catalog(image, config.photometry, tmp_path / "phot")
    assert built.path.name.endswith(f"__{built.version}.csv")
    found = built.table
    sep = np.hypot((found.ra_deg.to_numpy()[None, :] - truth.ra_deg.to_numpy()[:, None])
                   * np.cos(np.radians(truth.dec_deg.to_numpy()[:, None])),
                   found.dec_deg.to_numpy()[None, :] - truth.dec_deg.to_numpy()[:, None]) * 3600
    nearest = sep.argmin(axis=1)
    neighbour_px = np.sort(np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :]),
                           axis=1)[:, 1]
    isolated = neighbour_px > 12  # 3 beams
    assert (sep.min(axis=1)[isolated] < 0.2 * GRID.bmaj_arcsec).all()
    ratio = found.flux_jy.to_numpy()[nearest[isolated]] / truth.flux_jy.to_numpy()[isolated]
    assert np.abs(ratio - 1).max() < 0.05, ratio
    done, failed = photometer_images([image], built, config, PhotometryTables(tmp_path / "p2"))
    assert not failed and done[0].measured == len(found)


def test_commands_measure_plot_and_list_candidates(sky: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    import json

    from contimg_dask.cli.main import main

    base = ["--env", "testing", "--set", f"paths.root={tmp_path}"]
    out = str(tmp_path / "phot")
    images = [str(p) for p in sky["images"]]
    assert main([*base, "photometry", *images, "--catalog", str(sky["catalog"]), "--out", out,
                 "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert len(measured["measured"]) == N_EPOCHS and measured["failed"] == []
    png = tmp_path / "s0.png"
    assert main([*base, "lightcurve", VARIABLE, "--out", out, "--plot", str(png),
                 "--json"]) == 0
    text = capsys.readouterr().out
    rows = json.loads(text[:text.rindex("]") + 1])
    assert len(rows) == N_EPOCHS and png.read_bytes()[:4] == b"\x89PNG"
    ratio = rows[-1]["norm_flux_jy"] / rows[0]["norm_flux_jy"]
    assert abs(ratio - 0.5) < 0.05  # the injected halving, gains removed
    assert main([*base, "candidates", "--out", out, "--json"]) == 0
    candidates = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in candidates} == {VARIABLE}
    assert {c["kind"] for c in candidates} >= {"variable", "two_epoch"}
    assert all({"name", "kind", "metrics"} <= set(c) for c in candidates)
    assert main([*base, "lightcurve", "NOPE", "--out", out]) == 2
    assert "no measurements of source 'NOPE'" in capsys.readouterr().err
