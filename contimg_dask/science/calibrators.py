"""Calibrators: which catalogue sources transit through the primary beam during a block.

The packaged catalogue (``data/calibrators.csv``) holds the compact Perley-Butler 2017 flux
standards north of dec −10°, with flux densities at 1.4 GHz and spectral indices evaluated
from CASA's own coefficient tables (``scripts/build_calibrator_catalog.py``; docs/calibration.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from contimg_dask.config.schema import CalibrationConfig, PipelineConfig
from contimg_dask.io.store.block_geometry import BlockGeometry
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.science.skymodel import (
    PointSource,
    SourceTrack,
    apparent_flux,
    read_catalog,
    track_sources,
)

SIDEREAL_RATE_RAD_PER_S = 7.292115855e-5


def packaged_catalog() -> Path:
    """Path of the calibrator catalogue shipped with the package."""
    return Path(str(resources.files("contimg_dask.science") / "data" / "calibrators.csv"))


def load_calibrators(config: CalibrationConfig, override: str | Path | None = None
                     ) -> tuple[Path, list[PointSource]]:
    """The calibrator catalogue: ``override`` (e.g. ``--catalog``), else
    ``calibration.catalog``, else the packaged one. Returns its path and sources."""
    path = Path(override) if override else (config.catalog or packaged_catalog())
    return path, read_catalog(path)


@dataclass(frozen=True)
class CalibratorCandidate:
    """A catalogue source near the block's field, as a calibrator."""

    name: str
    ra_deg: float
    dec_deg: float
    catalog_flux_jy: float  # at the catalogue's reference frequency
    dec_offset_deg: float  # calibrator dec − pointing dec (apparent, at mid-block)
    transit_unix: float  # apparent HA 0 nearest the block's middle
    transits_in_block: bool
    closest_offset_deg: float  # smallest angular offset from the pointing during the block
    apparent_flux_jy: float  # beam-weighted at closest approach, band centre
    mean_apparent_flux_jy: float  # beam-weighted, averaged over the block, band centre
    usable: bool
    reason: str


def _candidate(track: SourceTrack, geometry: BlockGeometry, config: CalibrationConfig
               ) -> CalibratorCandidate:
    source = track.source
    mid = len(geometry.times_unix) // 2
    ha_mid = np.angle(np.exp(1j * (geometry.last[mid] - track.app_ra_rad[mid])))
    transit = float(geometry.times_unix[mid] - ha_mid / SIDEREAL_RATE_RAD_PER_S)
    half = 0.5 * geometry.integration_time_s
    inside = bool(geometry.times_unix[0] - half <= transit <= geometry.times_unix[-1] + half)
    centre_hz = np.array([float(np.mean(geometry.freq_hz))])
    flux = apparent_flux(track, centre_hz, geometry.dish_diameter_m)[:, 0]
    closest = int(np.argmin(track.beam_offset_rad))
    _, point_dec = geometry.pointing_apparent()
    dec_offset = float(np.degrees(track.app_dec_rad[mid] - point_dec[mid]))
    problems = []
    if not inside:
        problems.append("does not transit during the block")
    if abs(dec_offset) > config.dec_window_deg:
        problems.append(f"|dec offset| > {config.dec_window_deg} deg")
    if flux[closest] < config.min_apparent_flux_jy:
        problems.append(f"apparent flux < {config.min_apparent_flux_jy} Jy")
    return CalibratorCandidate(
        name=source.name, ra_deg=source.ra_deg, dec_deg=source.dec_deg,
        catalog_flux_jy=source.flux_jy, dec_offset_deg=dec_offset, transit_unix=transit,
        transits_in_block=inside,
        closest_offset_deg=float(np.degrees(track.beam_offset_rad[closest])),
        apparent_flux_jy=float(flux[closest]), mean_apparent_flux_jy=float(flux.mean()),
        usable=not problems, reason="; ".join(problems) or "ok")


def calibrator_candidates(tracks: list[SourceTrack], geometry: BlockGeometry,
                          config: CalibrationConfig) -> list[CalibratorCandidate]:
    """The tracked catalogue sources (:func:`track_sources` within ``model_radius_deg``) as
    calibrators: the usable ones (transiting, within the dec window, bright enough) first,
    brightest first."""
    candidates = [_candidate(t, geometry, config) for t in tracks]
    return sorted(candidates, key=lambda c: (not c.usable, -c.apparent_flux_jy))


def best_calibrator(candidates: list[CalibratorCandidate]) -> CalibratorCandidate | None:
    """The brightest usable candidate, or None."""
    usable = [c for c in candidates if c.usable]
    return usable[0] if usable else None


def calibrator_tracks(geometry: BlockGeometry, config: CalibrationConfig,
                      catalog: str | Path | None = None
                      ) -> tuple[Path, list[SourceTrack], list[CalibratorCandidate]]:
    """The catalogue's path (:func:`load_calibrators`), its sources tracked through the block
    within ``model_radius_deg`` (the calibration model) and those as calibrator candidates."""
    path, sources = load_calibrators(config, catalog)
    tracks = track_sources(sources, geometry, config.model_radius_deg)
    return path, tracks, calibrator_candidates(tracks, geometry, config)


def find_calibrators(store: str | Path, config: PipelineConfig,
                     catalog: str | Path | None = None
                     ) -> tuple[Path, list[CalibratorCandidate], CalibratorCandidate | None]:
    """Catalogue sources near the field of the block store ``store`` as calibrator
    candidates, and the best one (None: no calibrator transits the block). Returns the
    catalogue's path too."""
    path, _, candidates = calibrator_tracks(read_geometry(store), config.calibration, catalog)
    return path, candidates, best_calibrator(candidates)
