"""Sky models for the simulator: point sources with power-law spectra.

Catalogue files are CSV with the header ``name,ra_deg,dec_deg,flux_jy,ref_freq_hz,
spectral_index`` (ICRS degrees; flux density in Jy at ``ref_freq_hz``; S ∝ ν^spectral_index),
the same format the calibrator catalogue uses.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from contimg_dask.config.schema import SkyConfig
from contimg_dask.errors import InputError

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


def _power_law_fluxes(rng: np.random.Generator, n: int, smin: float, smax: float,
                      index: float) -> NDArray[np.float64]:
    """Draw ``n`` fluxes from dN/dS ∝ S^index between ``smin`` and ``smax``."""
    u = rng.random(n)
    a = index + 1.0
    if abs(a) < 1e-9:
        return smin * (smax / smin) ** u
    return (smin**a + u * (smax**a - smin**a)) ** (1.0 / a)


def random_sky(rng: np.random.Generator, ra_min_deg: float, ra_max_deg: float,
               dec_centre_deg: float, config: SkyConfig) -> list[PointSource]:
    """Random point sources over the strip RA [ra_min, ra_max] (deg, may exceed 360) widened by
    the field radius, dec within the field radius of ``dec_centre_deg``.

    The number of sources is ``n_random_sources`` per circular field of ``field_radius_deg``.
    """
    radius = config.field_radius_deg
    cos_dec = np.cos(np.radians(dec_centre_deg))
    ra_lo = ra_min_deg - radius / cos_dec
    ra_hi = ra_max_deg + radius / cos_dec
    strip_area = (ra_hi - ra_lo) * cos_dec * 2 * radius
    n = rng.poisson(config.n_random_sources * strip_area / (np.pi * radius**2))
    ra = rng.uniform(ra_lo, ra_hi, n) % 360.0
    dec = dec_centre_deg + rng.uniform(-radius, radius, n)
    flux = _power_law_fluxes(rng, n, config.min_flux_jy, config.max_flux_jy,
                             config.flux_power_law_index)
    alpha = rng.normal(config.spectral_index_mean, config.spectral_index_sd, n)
    variable = rng.random(n) < config.variable_fraction
    return [
        PointSource(name=f"SIM{i:04d}", ra_deg=float(ra[i]), dec_deg=float(dec[i]),
                    flux_jy=float(flux[i]), ref_freq_hz=config.reference_frequency_hz,
                    spectral_index=float(alpha[i]),
                    variability_rms=config.variability_rms if variable[i] else 0.0)
        for i in range(n)
    ]


def block_flux_scale(sources: list[PointSource], seed: int, block_index: int) -> NDArray:
    """Multiplicative flux factor of each source in block ``block_index`` (1 for steady ones).

    Deterministic in (seed, block_index), so a block's truth is reproducible on its own.
    """
    rng = np.random.default_rng([seed, 7919, block_index])
    rms = np.array([s.variability_rms for s in sources], dtype=float)
    return np.clip(1.0 + rms * rng.standard_normal(len(sources)), 0.05, None)
