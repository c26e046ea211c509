"""Beam tracking of the field's brightest source: hold its apparent flux constant through a
drift-scan block before imaging.

DSA-110's dishes do not track. During a block's 24 integrations a source at the centre of a
dec 16° field moves 0.6° either side of the beam's axis, so its apparent flux is ~12 % lower
in the first and last integrations than at transit. Neither CLEAN engine models a
time-variable sky: for a 10 Jy source the varying part stays in the residual as stripes at
~1.4 % of the peak (75× the noise, measured). Multiplying every integration's visibilities by
``g[t, ν] = B̄(s0, ν) / B(s0, t, ν)`` (the source's power beam ``B`` along its track, our
Airy model, ops/primary_beam.py) makes that source constant in time at its drift-averaged
apparent flux ``B̄``; weights are divided by ``g²``. Every other source is imaged with the
beam ``Σ_t c[t, ν] B(s, t, ν)`` of :func:`~contimg_dask.ops.primary_beam.
tracked_beam_coefficients`, which the stage's PB image uses, so PB-corrected fluxes stay
right everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.io.store.block_geometry import BlockGeometry
from contimg_dask.logs import get_logger
from contimg_dask.ops.primary_beam import tracking_scale
from contimg_dask.science.calibrators import load_calibrators
from contimg_dask.science.skymodel import SourceTrack, track_sources
from contimg_dask.telescope import airy_power_beam

log = get_logger(__name__)

#: Largest factor an integration's data may be scaled by: beyond it the source is near a
#: null of the beam in some integration, where the beam model is least certain.
MAX_TRACKING_SCALE = 10.0


@dataclass(frozen=True)
class TrackedSource:
    """The source the block's data are held constant for, and its track's beam."""

    name: str
    ra_deg: float
    dec_deg: float
    mean_apparent_flux_jy: float  # drift-averaged, beam-weighted, at the band's centre
    beam_offset_rad: NDArray[np.float64]  # (time,) from the pointing
    dish_diameter_m: float

    def scale(self, freq_hz: NDArray[np.float64]) -> NDArray[np.float64]:
        """Visibility factors (time, frequency) that hold this source constant."""
        return tracking_scale(airy_power_beam(self.beam_offset_rad[:, None],
                                              np.asarray(freq_hz, float)[None, :],
                                              self.dish_diameter_m))


def mean_apparent_flux(track: SourceTrack, freq_hz: float, diameter_m: float) -> float:
    """A source's apparent flux (Jy) at ``freq_hz``, averaged over the block's integrations
    (spectrum times the Airy power beam along its track)."""
    beam = airy_power_beam(track.beam_offset_rad, freq_hz, diameter_m)
    return float(np.mean(beam) * track.source.flux_at(np.array([freq_hz]))[0])


def tracked_source(geometry: BlockGeometry, config: PipelineConfig) -> TrackedSource | None:
    """The catalogue source (``calibration.catalog``, within ``calibration.model_radius_deg``)
    with the highest drift-averaged apparent flux, if it reaches
    ``imaging.beam_tracking_min_jy`` (None: tracking off) and its beam stays within a factor
    :data:`MAX_TRACKING_SCALE` of its mean; else None."""
    threshold = config.imaging.beam_tracking_min_jy
    if threshold is None:
        return None
    _, sources = load_calibrators(config.calibration)
    tracks = track_sources(sources, geometry, config.calibration.model_radius_deg)
    centre_hz = float(np.mean(geometry.freq_hz))
    diameter = geometry.dish_diameter_m
    flux = [mean_apparent_flux(t, centre_hz, diameter) for t in tracks]
    if not tracks or max(flux) < threshold:
        return None
    track = tracks[int(np.argmax(flux))]
    source = TrackedSource(track.source.name, track.source.ra_deg, track.source.dec_deg,
                           max(flux), np.asarray(track.beam_offset_rad, float), diameter)
    largest = float(source.scale(np.asarray(geometry.freq_hz)).max())
    if largest > MAX_TRACKING_SCALE:
        log.warning("block %s: %s not beam-tracked (its beam falls by %.1fx during the "
                    "block)", geometry.block_id, source.name, largest)
        return None
    return source
