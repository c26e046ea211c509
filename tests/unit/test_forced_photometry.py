"""Forced photometry against injected truth on synthetic images (Gaussian restoring beam,
noise correlated like a cleaned map's): pulls, joint fits of close pairs, upper limits."""

from __future__ import annotations

import numpy as np
import pytest

from contimg_dask.ops.background_mesh import background_meshes
from contimg_dask.ops.forced_photometry import FWHM_TO_SIGMA, forced_fluxes
from contimg_dask.testing.photometry_images import (
    SyntheticGrid,
    correlated_noise,
    point_sources,
)

GRID = SyntheticGrid(size=512, cell_arcsec=5.0, bmaj_arcsec=20.0, bmin_arcsec=15.0,
                     bpa_deg=30.0)
NOISE_JY = 1e-3
BOX = 64


def _grid_positions(rng: np.random.Generator, spacing: float) -> tuple[np.ndarray, ...]:
    """Jittered grid positions at least ~``spacing`` pixels apart (isolated sources)."""
    centres = np.arange(24, GRID.size - 24, spacing)
    x, y = np.meshgrid(centres, centres)
    x = x.ravel() + rng.uniform(-2, 2, x.size)
    y = y.ravel() + rng.uniform(-2, 2, y.size)
    return x, y


def _measure(plane: np.ndarray, x: np.ndarray, y: np.ndarray, cluster_beams: float = 1.5
             ) -> dict[str, np.ndarray]:
    bkg, rms = background_meshes(plane, BOX)
    return forced_fluxes(plane, bkg, rms, BOX, x, y, GRID.beam_cov_pixels(), cluster_beams)


def test_pulls_of_isolated_sources_are_unit_normal() -> None:
    # 2 images x ~400 isolated sources at S/N 3-100: (recovered - injected)/error must be
    # a unit normal (mean within 0.1, std 0.8-1.2), i.e. errors that account for the
    # beam-correlated noise (VAST's independent-pixel error would give std ~2.6 here).
    rng = np.random.default_rng(11)
    cov = GRID.beam_cov_pixels()
    pulls = []
    for _ in range(2):
        x, y = _grid_positions(rng, 24.0)
        flux = NOISE_JY * np.exp(rng.uniform(np.log(3), np.log(100), x.size))
        plane = (point_sources((GRID.size, GRID.size), cov, x, y, flux)
                 + correlated_noise((GRID.size, GRID.size), cov, NOISE_JY, rng))
        fit = _measure(plane, x, y)
        assert fit["valid"].all() and (fit["cluster_size"] == 1).all()
        pulls.append((fit["flux_jy"] - flux) / fit["flux_err_jy"])
    pull = np.concatenate(pulls)
    assert len(pull) > 700
    assert abs(pull.mean()) < 0.1, pull.mean()
    assert 0.8 <= pull.std() <= 1.2, pull.std()


@pytest.mark.parametrize("separation_beams", [0.5, 0.75, 1.0, 1.25, 1.5])
def test_close_pairs_are_fitted_jointly_without_bias(separation_beams: float) -> None:
    # Pairs 0.5-1.5 beam FWHM apart (major axis), at random angles, fluxes 1:1 to 1:3, at
    # S/N ~100-300: the joint fit's mean fractional bias < 5 % for both members; fitting
    # each alone (cluster_beams=0) is biased by the neighbour's wings (the check can fail).
    rng = np.random.default_rng(int(separation_beams * 100))
    cov = GRID.beam_cov_pixels()
    fwhm = np.sqrt(np.linalg.eigvalsh(cov).max()) / FWHM_TO_SIGMA
    xa, ya = _grid_positions(rng, 32.0)
    angle = rng.uniform(0, np.pi, xa.size)
    xb = xa + separation_beams * fwhm * np.cos(angle)
    yb = ya + separation_beams * fwhm * np.sin(angle)
    fa = 0.1 * np.ones(xa.size)
    fb = fa * rng.uniform(1 / 3, 1.0, xa.size)
    x, y, f = np.r_[xa, xb], np.r_[ya, yb], np.r_[fa, fb]
    plane = (point_sources((GRID.size, GRID.size), cov, x, y, f)
             + correlated_noise((GRID.size, GRID.size), cov, NOISE_JY, rng))
    joint = _measure(plane, x, y)
    if separation_beams < 1.5:  # at 1.5 beams the neighbour's wing is 0.2 %: either way
        assert (joint["cluster_size"] == 2).all()
    bias = joint["flux_jy"] / f - 1
    assert abs(bias[:xa.size].mean()) < 0.05 and abs(bias[xa.size:].mean()) < 0.05
    assert np.abs(bias).max() < 0.25
    alone = _measure(plane, x, y, cluster_beams=0.0)
    assert (alone["cluster_size"] == 1).all()
    if separation_beams <= 1.0:
        assert (alone["flux_jy"] / f - 1)[xa.size:].mean() > 0.1


def test_blanked_and_off_image_positions_are_not_measured() -> None:
    rng = np.random.default_rng(5)
    cov = GRID.beam_cov_pixels()
    plane = correlated_noise((GRID.size, GRID.size), cov, NOISE_JY, rng)
    plane[:, :100] = np.nan  # beyond the PB cutoff
    x = np.array([50.0, 300.0, -20.0, 600.0])
    y = np.array([200.0, 200.0, 10.0, 10.0])
    fit = _measure(plane, x, y)
    assert fit["valid"].tolist() == [False, True, False, False]
    assert np.isnan(fit["flux_jy"][[0, 2, 3]]).all() and np.isfinite(fit["flux_jy"][1])
