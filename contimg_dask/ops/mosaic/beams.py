"""Elliptical Gaussian restoring beams: the common beam of a set of inputs and the kernel
that takes one beam to another.

A beam is the covariance matrix of its Gaussian in the sky plane (east, north; deg²):
convolving two Gaussians adds their covariances, so the kernel from beam b to beam t is
Σt − Σb (which must be positive semi-definite: t must contain b). Angles: FWHM in degrees,
position angle in degrees east of north.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FWHM_PER_SIGMA = float(np.sqrt(8.0 * np.log(2.0)))


@dataclass(frozen=True)
class GaussianBeam:
    """A restoring beam: FWHM major and minor axes (deg), position angle (deg E of N)."""

    major_deg: float
    minor_deg: float
    pa_deg: float

    @property
    def area_deg2(self) -> float:
        """The beam's solid angle, π·a·b / (4 ln 2) (deg²)."""
        return float(np.pi * self.major_deg * self.minor_deg / (4.0 * np.log(2.0)))

    def covariance(self) -> NDArray[np.float64]:
        """Covariance matrix in (east, north), deg²."""
        pa = np.radians(self.pa_deg)
        major = np.array([np.sin(pa), np.cos(pa)])
        minor = np.array([np.cos(pa), -np.sin(pa)])
        return ((self.major_deg / FWHM_PER_SIGMA) ** 2 * np.outer(major, major)
                + (self.minor_deg / FWHM_PER_SIGMA) ** 2 * np.outer(minor, minor))

    @classmethod
    def from_covariance(cls, cov: NDArray[np.float64]) -> GaussianBeam:
        values, vectors = np.linalg.eigh(0.5 * (cov + cov.T))
        values = np.clip(values, 0.0, None)
        east, north = vectors[:, 1]
        pa = float(np.degrees(np.arctan2(east, north))) % 180.0
        return cls(float(np.sqrt(values[1]) * FWHM_PER_SIGMA),
                   float(np.sqrt(values[0]) * FWHM_PER_SIGMA), pa)

    def to_dict(self) -> dict[str, float]:
        return {"major_deg": self.major_deg, "minor_deg": self.minor_deg, "pa_deg": self.pa_deg}


def contains(outer: GaussianBeam, inner: GaussianBeam, tolerance: float = 1e-9) -> bool:
    """True when ``inner`` can be convolved to ``outer`` (Σouter − Σinner >= 0)."""
    difference = outer.covariance() - inner.covariance()
    return bool(np.linalg.eigvalsh(difference).min() >= -tolerance * np.trace(outer.covariance()))


def common_beam(beams: list[GaussianBeam]) -> GaussianBeam:
    """A beam that contains every one of ``beams``: the largest by area, enlarged along the
    direction (in its whitened frame) where another beam sticks out, one beam at a time.
    Equal to the input when all beams are equal; not always the smallest such ellipse."""
    covs = [b.covariance() for b in beams]
    target = max(covs, key=lambda c: float(np.linalg.det(c)))
    for _ in range(3):
        for cov in covs:
            chol = np.linalg.cholesky(target)
            inv = np.linalg.inv(chol)
            values, vectors = np.linalg.eigh(inv @ cov @ inv.T)
            if values[-1] > 1.0 + 1e-12:
                v = vectors[:, -1]
                target = chol @ (np.eye(2) + (values[-1] - 1.0) * np.outer(v, v)) @ chol.T
    return GaussianBeam.from_covariance(target)


def convolve_to_beam(plane: NDArray[np.float64], target: GaussianBeam, beam: GaussianBeam,
                     cell_deg: float) -> NDArray[np.float64] | None:
    """``plane`` (restored with ``beam``, on a grid of ``cell_deg`` pixels whose x axis points
    west, CDELT1 < 0) convolved with the unit-integral Gaussian taking ``beam`` to ``target``;
    None when the beams are equal (nothing to do). Applied as the Gaussian's transfer
    function exp(-2π² kᵀΣk) on the padded plane's FFT: exact also for the thin kernels
    (nearly degenerate Σ) that a pixel-sampled kernel would turn into a delta. Units are
    unchanged (multiply by the area ratio for Jy/beam of ``target``). NaN is not allowed.

    Raises
    ------
    ValueError
        ``target`` does not contain ``beam``.
    """
    if not contains(target, beam):
        raise ValueError(f"beam {beam} is not contained in {target}")
    cov = target.covariance() - beam.covariance()
    if np.trace(cov) <= 1e-6 * np.trace(target.covariance()):
        return None
    flip = np.diag([-1.0, 1.0]) / cell_deg  # (east, north) deg -> (x, y) pixels
    cov_pix = flip @ cov @ flip
    pad = int(np.ceil(5.0 * np.sqrt(max(np.linalg.eigvalsh(cov_pix).max(), 0.0)))) + 1
    ny, nx = plane.shape
    padded = np.pad(plane, pad)
    ky = np.fft.fftfreq(padded.shape[0])[:, None]
    kx = np.fft.rfftfreq(padded.shape[1])[None, :]
    transfer = np.exp(-2.0 * np.pi ** 2 * (cov_pix[0, 0] * kx * kx + 2 * cov_pix[0, 1] * kx * ky
                                           + cov_pix[1, 1] * ky * ky))
    out = np.fft.irfft2(np.fft.rfft2(padded) * transfer, s=padded.shape)
    return out[pad:pad + ny, pad:pad + nx]
