"""The configuration sections of the science stages after imaging: forced photometry,
variability and mosaicking."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from contimg_dask.config.section import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Section,
)


class PhotometryReferencesConfig(Section):
    """Which catalogue sources set an epoch's flux scale, and how (docs/photometry.md)."""

    min_flux_jy: PositiveFloat
    min_snr: PositiveFloat
    isolation_beams: PositiveFloat
    max_size_arcsec: PositiveFloat
    min_pb: Fraction
    min_count: Annotated[int, Field(ge=3)]
    clip_sigma: PositiveFloat
    max_eta: PositiveFloat


class VariabilityThresholdsConfig(Section):
    """Candidate thresholds calibrated by benchmarks/variability_thresholds.py at the given
    epoch counts (interpolated linearly in log N between them)."""

    epochs: list[PositiveInt]
    eta: list[PositiveFloat]
    vs: list[PositiveFloat]
    ese_z: list[PositiveFloat]

    @model_validator(mode="after")
    def _same_lengths(self) -> VariabilityThresholdsConfig:
        if not (len(self.epochs) == len(self.eta) == len(self.vs) == len(self.ese_z) >= 1):
            raise ValueError("epochs: epochs, eta, vs and ese_z need one value each per "
                             "calibrated epoch count")
        if sorted(self.epochs) != self.epochs:
            raise ValueError("epochs: must be increasing")
        return self


class VariabilityConfig(Section):
    """Variability metrics and candidates (docs/variability.md)."""

    min_epochs: Annotated[int, Field(ge=2)]
    v_min: NonNegativeFloat
    m_min: NonNegativeFloat
    ese_widths_days: list[PositiveFloat]
    ese_min_depth: Fraction
    ese_min_inside: PositiveInt
    thresholds: VariabilityThresholdsConfig


class PhotometryFinderConfig(Section):
    """The source finder that builds a catalogue from a deep image (photutils
    segmentation)."""

    detection_sigma: PositiveFloat
    min_pixels: Annotated[int, Field(ge=2)]


class PhotometryConfig(Section):
    """The ``photometry`` stage and commands: forced photometry, normalisation, light
    curves (docs/photometry.md)."""

    catalog: Path | None
    image_kind: Literal["image_pbcor", "image"]
    cluster_beams: PositiveFloat
    detection_sigma: PositiveFloat
    noise_box_beams: PositiveFloat
    noise_subsample: PositiveInt
    systematic_fraction: NonNegativeFloat
    references: PhotometryReferencesConfig
    finder: PhotometryFinderConfig
    variability: VariabilityConfig



class MosaicConfig(Section):
    """``contimg mosaic`` and the ``mosaic`` stage: PB²/σ²-weighted linear mosaics of block
    images (docs/mosaicking.md)."""

    period_s: PositiveFloat
    pb_cutoff: Annotated[float, Field(gt=0, lt=1)]
    projection: Literal["SIN", "CAR"]
    cell_arcsec: PositiveFloat | None
    tile_pixels: Annotated[int, Field(ge=64)]
    interpolation: Literal["nearest-neighbor", "bilinear", "biquadratic", "bicubic"]
    regrid_step_px: NonNegativeInt
    beam_tolerance: Annotated[float, Field(ge=0)]
    quicklook: bool
