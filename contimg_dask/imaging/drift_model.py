"""Hold the field's other bright sources constant through a drift-scan block, with the
catalogue's model.

Beam tracking (imaging/beam_tracking.py) scales each integration so that the brightest
source keeps its drift-averaged apparent flux; one factor per integration can do that for one
direction only. Every other source s still changes through the block, as
``g(t, ν) B(s, t, ν) S_s(ν)`` (``g`` the tracking factor, ``B`` the Airy power beam at its
offset from integration t's pointing). CLEAN models a constant sky, so the part of that
product that varies in time stays in the residual as stripes through s: ~1 % of its apparent
flux, -17 to -22 sigma for the 2-4 Jy sources of the accuracy field (docs/imaging.md).

This module adds, to integration t of every such source (catalogue flux at least
``imaging.drift_model_min_jy`` apparent, drift-averaged), the model visibilities of

    ΔS(s, t, ν) = S_s(ν) [P(s, ν) − g(t, ν) B(s, t, ν)],   P(s, ν) = Σ_t c(t, ν) B(s, t, ν)

(``c`` the coefficients of :func:`~contimg_dask.ops.primary_beam.tracked_beam_coefficients`,
with which the stage's PB image is made): s is then constant at ``S_s P(s)``, the value the
PB image divides by, so PB-corrected fluxes are unchanged. The correction is as good as the
catalogue flux: an error ε in ``S_s`` leaves ε of the time-variable part (a 10 % error: 10x
weaker stripes than without it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.imaging.beam_tracking import mean_apparent_flux
from contimg_dask.io.store.block_geometry import BlockGeometry
from contimg_dask.ops.calibration import point_source_visibilities
from contimg_dask.ops.primary_beam import tracked_beam_coefficients
from contimg_dask.science.calibrators import load_calibrators
from contimg_dask.science.skymodel import apparent_flux, path_differences, track_sources


@dataclass(frozen=True)
class DriftModel:
    """The correction of the sources held constant by their model (see the module
    docstring): per source its name, path difference to the phase centre and ΔS."""

    names: tuple[str, ...]
    dw_m: NDArray[np.float64]  # (source, time, baseline), metres
    delta_flux_jy: NDArray[np.float64]  # (source, time, store channel)
    freq_hz: NDArray[np.float64]  # (store channel,)

    def visibilities(self, channels: slice, n_pol: int = 2) -> NDArray[np.complex64]:
        """The correction's visibilities (time, baseline, channel, polarization) for the
        store's ``channels``, in the block store's convention (the MS holds their
        conjugate)."""
        return point_source_visibilities(self.dw_m, self.delta_flux_jy[:, :, channels],
                                         self.freq_hz[channels], n_pol)


def drift_flux_correction(apparent_jy: NDArray[np.float64], scale: NDArray[np.float64]
                          ) -> NDArray[np.float64]:
    """ΔS (time, frequency) that makes a source of apparent flux ``apparent_jy`` (time,
    frequency: spectrum times power beam) constant in data rescaled by ``scale`` (time,
    frequency; 1: no tracking): ``Σ_t c A − g A`` with ``c`` the rescaled data's time
    coefficients."""
    coefficients = tracked_beam_coefficients(scale)
    return (coefficients * apparent_jy).sum(axis=0, keepdims=True) - scale * apparent_jy


def drift_model(geometry: BlockGeometry, config: PipelineConfig, tracked_name: str | None,
                scale: NDArray[np.float64] | None, w_centre_m: NDArray[np.float64]
                ) -> DriftModel | None:
    """The correction for every catalogue source (``calibration.catalog`` within
    ``calibration.model_radius_deg``) but the beam-tracked one (``tracked_name``) whose
    drift-averaged apparent flux at the band's centre reaches ``imaging.drift_model_min_jy``;
    None when that key is null or no source qualifies. ``scale`` (time, store channel): the
    beam tracking's factors (None: none); ``w_centre_m`` (time, baseline): the imaged data
    group's w (metres)."""
    threshold = config.imaging.drift_model_min_jy
    if threshold is None:
        return None
    _, sources = load_calibrators(config.calibration)
    freq = np.asarray(geometry.freq_hz, float)
    centre_hz = float(np.mean(freq))
    diameter = geometry.dish_diameter_m
    tracks = []
    for track in track_sources(sources, geometry, config.calibration.model_radius_deg):
        if (track.source.name != tracked_name
                and mean_apparent_flux(track, centre_hz, diameter) >= threshold):
            tracks.append(track)
    if not tracks:
        return None
    g = np.ones((len(geometry.times_unix), len(freq))) if scale is None else scale
    delta = np.stack([drift_flux_correction(apparent_flux(t, freq, diameter), g)
                      for t in tracks])
    return DriftModel(tuple(t.source.name for t in tracks),
                      path_differences(tracks, geometry, w_centre_m), delta, freq)
