"""The drift model's flux correction (imaging/drift_model.py) against its definition, on
beams computed independently here: a source off the tracked direction becomes constant in the
rescaled data, at the value the stage's PB image assumes for it."""

from __future__ import annotations

import numpy as np

from contimg_dask.imaging.drift_model import drift_flux_correction
from contimg_dask.ops.primary_beam import tracked_beam_coefficients, tracking_scale
from contimg_dask.telescope import airy_power_beam

FREQ_HZ = np.array([1.31e9, 1.40e9, 1.49e9])
DIAMETER_M = 4.65
# Offsets (rad) from the pointing over 24 integrations of a source at the centre (tracked)
# and of one 0.5 deg east, 0.25 deg north of it (dec 16 deg: 1.24 deg of drift per block).
DRIFT = np.radians(np.linspace(-0.62, 0.62, 24))
TRACKED = np.abs(DRIFT)
OTHER = np.hypot(np.radians(0.5) - DRIFT, np.radians(0.25))


def _apparent(offset: np.ndarray, flux_jy: float) -> np.ndarray:
    return flux_jy * airy_power_beam(offset[:, None], FREQ_HZ[None, :], DIAMETER_M)


def test_corrected_source_is_constant_at_the_pb_images_value() -> None:
    g = tracking_scale(airy_power_beam(TRACKED[:, None], FREQ_HZ[None, :], DIAMETER_M))
    apparent = _apparent(OTHER, 5.0)
    corrected = g * apparent + drift_flux_correction(apparent, g)
    # Before: the rescaled source varies by tens of per cent through the block.
    assert np.ptp(g * apparent, axis=0).min() > 0.3 * apparent.mean()
    expected = (tracked_beam_coefficients(g) * apparent).sum(axis=0)
    np.testing.assert_allclose(corrected, np.broadcast_to(expected, corrected.shape),
                               rtol=1e-12)
    # The image's weighted mean (MS weights 1/g²) is the same with and without the correction.
    weights = 1 / g ** 2
    np.testing.assert_allclose((weights * corrected).sum(0) / weights.sum(0),
                               (weights * g * apparent).sum(0) / weights.sum(0), rtol=1e-12)


def test_without_tracking_the_source_is_held_at_its_drift_average() -> None:
    apparent = _apparent(OTHER, 2.0)
    ones = np.ones_like(apparent)
    corrected = apparent + drift_flux_correction(apparent, ones)
    np.testing.assert_allclose(corrected, np.broadcast_to(apparent.mean(axis=0),
                                                          corrected.shape), rtol=1e-12)
