"""Per-epoch flux-scale normalisation: with 5-10 % gain errors per epoch and 5 % of the
references varying by 30 %, constant sources' normalised light curves scatter <= 2 %; an
epoch with too few references is flagged, never silently scaled."""

from __future__ import annotations

import numpy as np

from contimg_dask.ops.flux_normalisation import epoch_scales, normalise, varying_references

N_EPOCHS, N_REFS, N_TARGETS = 60, 40, 50
NOISE_JY = 2e-3


def _epochs(rng: np.random.Generator, gain_sd: float):
    gain = 1 + gain_sd * rng.standard_normal(N_EPOCHS)
    ref_true = rng.uniform(0.1, 1.0, N_REFS)
    varying = rng.choice(N_REFS, N_REFS // 20, replace=False)  # 5 % of the references
    ref_factor = np.ones((N_EPOCHS, N_REFS))
    ref_factor[:, varying] = 1 + 0.3 * rng.choice([-1, 1], (N_EPOCHS, len(varying)))
    ref = gain[:, None] * ref_true * ref_factor + NOISE_JY * rng.standard_normal(
        (N_EPOCHS, N_REFS))
    target_true = rng.uniform(0.2, 1.0, N_TARGETS)
    target = gain[:, None] * target_true + NOISE_JY * rng.standard_normal(
        (N_EPOCHS, N_TARGETS))
    return ref, ref_true, varying, target, target_true


def test_normalised_constant_sources_scatter_at_most_2_percent() -> None:
    for seed, gain_sd in ((1, 0.05), (2, 0.10)):
        rng = np.random.default_rng(seed)
        ref, ref_true, varying, target, target_true = _epochs(rng, gain_sd)
        ratio = ref / ref_true
        usable = np.ones_like(ratio, bool)
        scale, scale_err, count = epoch_scales(ratio, usable, min_references=3)
        dropped = varying_references(ratio, np.full_like(ratio, NOISE_JY) / ref_true, scale,
                                     usable, max_eta=5.0)
        assert set(np.flatnonzero(dropped)) == set(varying)
        usable[:, dropped] = False
        scale, scale_err, count = epoch_scales(ratio, usable, min_references=3)
        assert (count >= N_REFS // 2).all()  # 3σ clipping keeps most of the ensemble
        flux, err = normalise(target, np.full_like(target, NOISE_JY), scale[:, None],
                              scale_err[:, None], 0.0)
        rms = (flux / target_true - 1).std(axis=0)
        raw_rms = (target / target_true - 1).std(axis=0)
        assert rms.max() <= 0.02, rms.max()
        assert raw_rms.mean() > 2 * gain_sd / 3  # the gains were there to be removed
        pull = (flux / target_true - 1) * target_true / err
        assert 0.6 < pull.std() < 1.5  # the stated errors describe the scatter


def test_an_epoch_with_too_few_references_is_flagged() -> None:
    ratio = np.array([[1.0, 1.02, 0.98, 1.01], [1.0, 1.01, np.nan, np.nan]])
    usable = np.array([[True, True, True, True], [True, True, True, True]])
    scale, err, count = epoch_scales(ratio, usable, min_references=3)
    assert np.isfinite(scale[0]) and count[0] == 4
    assert np.isnan(scale[1]) and np.isnan(err[1]) and count[1] == 2
    flux, flux_err = normalise(np.array([0.5, 0.5]), np.array([0.01, 0.01]), scale, err, 0.01)
    assert np.isfinite(flux[0]) and np.isnan(flux[1]) and np.isnan(flux_err[1])
