"""Sky models: point sources with power-law spectra, and their catalogue files.

A catalogue is a CSV file with the header ``name,ra_deg,dec_deg,flux_jy,ref_freq_hz,
spectral_index``: ICRS position in degrees, flux density in Jy at ``ref_freq_hz`` (Hz), and
S(ν) = flux_jy · (ν / ref_freq_hz)^spectral_index. Lines starting with ``#`` are comments.
The simulator's sky files and the calibrator catalogue share the format (docs/calibration.md).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from contimg_dask.coords.frames import angular_separation, icrs_to_apparent
from contimg_dask.errors import InputError
from contimg_dask.io.store.block_geometry import BlockGeometry
from contimg_dask.ops.calibration import point_source_visibilities
from contimg_dask.ops.uvw import w_towards
from contimg_dask.telescope import airy_power_beam

CATALOG_COLUMNS = ("name", "ra_deg", "dec_deg", "flux_jy", "ref_freq_hz", "spectral_index")


@dataclass(frozen=True)
class PointSource:
    """A point source: ICRS position (deg), flux density (Jy) at ``ref_freq_hz``, spectral index,
    and the fractional rms of its block-to-block variability (0 for a steady source)."""

    name: str
    ra_deg: float
    dec_deg: float
    flux_jy: float
    ref_freq_hz: float
    spectral_index: float
    variability_rms: float = 0.0

    def flux_at(self, freq_hz: NDArray[np.float64]) -> NDArray[np.float64]:
        """Flux density (Jy) at ``freq_hz`` before variability."""
        return self.flux_jy * (np.asarray(freq_hz) / self.ref_freq_hz) ** self.spectral_index

    def as_dict(self) -> dict:
        return asdict(self)


def read_catalog(path: str | Path) -> list[PointSource]:
    """Read a point-source catalogue CSV (see module docstring for the format)."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(line for line in handle if not line.startswith("#"))
            missing = [c for c in CATALOG_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"catalogue lacks columns {missing}; expected header "
                                 f"{','.join(CATALOG_COLUMNS)}", file=path)
            sources = []
            for line_no, row in enumerate(reader, start=2):
                try:
                    sources.append(PointSource(
                        name=row["name"].strip(), ra_deg=float(row["ra_deg"]),
                        dec_deg=float(row["dec_deg"]), flux_jy=float(row["flux_jy"]),
                        ref_freq_hz=float(row["ref_freq_hz"]),
                        spectral_index=float(row["spectral_index"])))
                except (TypeError, ValueError) as exc:
                    raise InputError(f"catalogue row {line_no} is invalid: {exc}",
                                     file=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read catalogue: {exc.strerror}", file=path) from exc
    return sources


def write_catalog(sources: list[PointSource], path: str | Path) -> None:
    """Write sources as a catalogue CSV."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CATALOG_COLUMNS)
        for s in sources:
            writer.writerow([s.name, f"{s.ra_deg:.9f}", f"{s.dec_deg:.9f}", f"{s.flux_jy:.6g}",
                             f"{s.ref_freq_hz:.6g}", f"{s.spectral_index:.4f}"])


@dataclass(frozen=True)
class SourceTrack:
    """A catalogue source seen from a block: its apparent position at each integration and
    its angular offset from the dishes' pointing (radians)."""

    source: PointSource
    app_ra_rad: NDArray[np.float64]
    app_dec_rad: NDArray[np.float64]
    beam_offset_rad: NDArray[np.float64]


def track_sources(sources: list[PointSource], geometry: BlockGeometry, radius_deg: float
                  ) -> list[SourceTrack]:
    """The sources within ``radius_deg`` of the block's pointing at any integration, with
    their apparent (geocentric apparent, ERFA) positions and beam offsets per integration."""
    if not sources:
        return []
    jd = geometry.jd
    ra = np.radians([s.ra_deg for s in sources])[:, None]
    dec = np.radians([s.dec_deg for s in sources])[:, None]
    app_ra, app_dec = icrs_to_apparent(ra, dec, jd[None, :], *geometry.site)
    point_ra, point_dec = geometry.pointing_apparent()
    offset = angular_separation(app_ra, app_dec, point_ra[None, :], point_dec[None, :])
    near = np.degrees(offset.min(axis=1)) <= radius_deg
    return [SourceTrack(s, app_ra[i], app_dec[i], offset[i])
            for i, s in enumerate(sources) if near[i]]


def apparent_flux(track: SourceTrack, freq_hz: NDArray[np.float64], dish_diameter_m: float
                  ) -> NDArray[np.float64]:
    """Beam-weighted flux density (Jy) of a tracked source, (time, frequency)."""
    spectrum = track.source.flux_at(freq_hz)
    beam = airy_power_beam(track.beam_offset_rad[:, None], np.asarray(freq_hz)[None, :],
                           dish_diameter_m)
    return spectrum[None, :] * beam


def path_differences(tracks: list[SourceTrack], geometry: BlockGeometry,
                     w_centre_m: NDArray[np.float64]) -> NDArray[np.float64]:
    """w_source − w_centre (source, time, baseline), metres: the geometric delay of each
    source relative to the data group's phase centre, whose w per (time, baseline) is
    ``w_centre_m`` (the group's own UVW w)."""
    out = np.empty((len(tracks), *w_centre_m.shape))
    for i, track in enumerate(tracks):
        ha = geometry.last - track.app_ra_rad
        out[i] = w_towards(geometry.baselines_local_m[None, :, :], ha[:, None],
                           track.app_dec_rad[:, None]) - w_centre_m
    return out


def model_chunk(freq_hz: NDArray[np.float64], dw_m: NDArray[np.float64],
                tracks: list[SourceTrack], dish_diameter_m: float, n_pol: int
                ) -> NDArray[np.complex64]:
    """Model visibilities (time, baseline, frequency, polarization) of ``tracks`` for one
    frequency chunk, Airy-beam weighted, unpolarized (every parallel hand = Stokes I)."""
    n_t = dw_m.shape[1]
    if not tracks:
        return np.zeros((n_t, dw_m.shape[2], len(freq_hz), n_pol), np.complex64)
    flux = np.stack([apparent_flux(t, freq_hz, dish_diameter_m) for t in tracks])
    return point_source_visibilities(dw_m, flux, freq_hz, n_pol)
