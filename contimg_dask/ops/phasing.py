"""Phase centres and visibility rephasing (plain NumPy/Numba on in-memory arrays).

A visibility phased to a centre with path difference ``w_old`` (m) is moved to a centre with
``w_new`` by ``V · exp(-2πi ν (w_new - w_old) / c)``: for a source in direction s the data go
from ``S·exp(+2πi ν (w_s - w_old)/c)`` to ``S·exp(+2πi ν (w_s - w_new)/c)``. This is the
correlator's and pyuvdata's convention (see docs/conventions.md).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

from contimg_dask.constants import SPEED_OF_LIGHT
from contimg_dask.coords.frames import (
    apparent_to_icrs,
    icrs_position_angle,
    icrs_to_apparent,
    local_apparent_sidereal_time,
)
from contimg_dask.ops.uvw import rotate_uv, uvw_from_hadec


def phase_centres(kind: str, dec_rad: float, ra_rad: float | None, jd_utc: NDArray[np.float64],
                  longitude_rad: float, latitude_rad: float, height_m: float
                  ) -> dict[str, NDArray[np.float64]]:
    """Per-integration phase centre in apparent and ICRS coordinates, the LAST, and the
    position angle from apparent to ICRS north at the centre (``frame_pa``), all radians.

    ``kind`` is ``"drift"`` (apparent HA 0 at apparent dec ``dec_rad``) or ``"sidereal"``
    (the fixed ICRS direction ``ra_rad``, ``dec_rad``).
    """
    site = (longitude_rad, latitude_rad, height_m)
    last = local_apparent_sidereal_time(jd_utc, longitude_rad)
    if kind == "drift":
        app_ra, app_dec = last.copy(), np.full(len(jd_utc), dec_rad)
        icrs_ra, icrs_dec = apparent_to_icrs(app_ra, app_dec, jd_utc, *site)
    elif kind == "sidereal":
        icrs_ra, icrs_dec = np.full(len(jd_utc), ra_rad), np.full(len(jd_utc), dec_rad)
        app_ra, app_dec = icrs_to_apparent(icrs_ra, icrs_dec, jd_utc, *site)
    else:
        raise ValueError(f"unknown phase centre kind {kind!r}")
    frame_pa = icrs_position_angle(app_ra, app_dec, jd_utc, *site)
    return {"last": last, "app_ra": app_ra, "app_dec": app_dec, "icrs_ra": icrs_ra,
            "icrs_dec": icrs_dec, "frame_pa": frame_pa}


def uvw_towards(baselines_xyz: NDArray[np.float64], last: NDArray[np.float64],
                app_ra: NDArray[np.float64], app_dec: NDArray[np.float64],
                frame_pa: NDArray[np.float64]) -> NDArray[np.float64]:
    """UVW (time, baseline, 3) of local-meridian baselines towards per-time apparent centres,
    with (u, v) turned by ``frame_pa`` so that v points to ICRS north (the frame the block
    store and the Measurement Set declare; pyuvdata does the same)."""
    ha = (last - app_ra)[:, None]
    uvw = uvw_from_hadec(baselines_xyz[None, :, :], ha, app_dec[:, None])
    return rotate_uv(uvw, frame_pa[:, None])


@numba.njit(parallel=False, nogil=True, cache=True)
def _rotate(vis: NDArray[np.complex64], dw: NDArray[np.float64], freq: NDArray[np.float64],
            out: NDArray[np.complex64], conjugate: bool) -> None:
    n_t, n_b, n_f, n_p = vis.shape
    scale = -2.0 * math.pi / SPEED_OF_LIGHT
    sign = np.float32(-1.0 if conjugate else 1.0)
    # Uniformly spaced channels (one subband chunk): advance the phasor (float64) by one
    # complex multiplication per channel instead of a sine and cosine.
    uniform = n_f > 1
    step = freq[1] - freq[0] if uniform else 0.0
    if uniform:
        for f in range(2, n_f):
            if abs(freq[f] - freq[f - 1] - step) > 1e-6 * abs(step):
                uniform = False
                break
    for t in range(n_t):
        for b in range(n_b):
            k = scale * dw[t, b]
            cos_f, sin_f = math.cos(k * freq[0]), math.sin(k * freq[0])
            cos_step, sin_step = math.cos(k * step), math.sin(k * step)
            for f in range(n_f):
                if not uniform and f > 0:
                    cos_f, sin_f = math.cos(k * freq[f]), math.sin(k * freq[f])
                c, s = np.float32(cos_f), np.float32(sin_f)
                for p in range(n_p):
                    x = vis[t, b, f, p]
                    out[t, b, f, p] = complex(x.real * c - x.imag * s,
                                              sign * (x.real * s + x.imag * c))
                if uniform:
                    cos_f, sin_f = (cos_f * cos_step - sin_f * sin_step,
                                    cos_f * sin_step + sin_f * cos_step)


def rotate_by_path_difference(vis: NDArray[np.complex64], dw: NDArray[np.float64],
                              freq_hz: NDArray[np.float64],
                              out: NDArray[np.complex64] | None = None,
                              conjugate: bool = False) -> NDArray[np.complex64]:
    """``vis · exp(-2πi ν dw / c)`` for ``vis`` (time, baseline, frequency, polarization)
    and path differences ``dw = w_new - w_old`` (time, baseline; metres).

    ``out`` may be ``vis`` itself (in place); with ``conjugate`` the conjugate of the
    result is returned (the Measurement Set's convention), in the same pass. Strided input
    (e.g. a frequency-reversed view) is read in place: no copy.
    """
    if out is None:
        out = np.empty(vis.shape, dtype=vis.dtype)
    _rotate(vis, np.ascontiguousarray(dw, dtype=np.float64),
            np.ascontiguousarray(freq_hz, np.float64), out, conjugate)
    return out


def block_centre(kind: str, dec_rad: float, ra_rad: float | None, jd_utc: NDArray[np.float64],
                 longitude_rad: float, latitude_rad: float, height_m: float
                 ) -> tuple[float, float]:
    """The fixed ICRS centre a block is rephased to by default: for a drift block the ICRS
    position of apparent HA 0 / its declination at the block's mid-time; for a tracked
    block its own centre."""
    if kind == "sidereal":
        return float(ra_rad), float(dec_rad)
    mid = np.array([0.5 * (jd_utc[0] + jd_utc[-1])])
    pc = phase_centres("drift", dec_rad, None, mid, longitude_rad, latitude_rad, height_m)
    return float(pc["icrs_ra"][0]), float(pc["icrs_dec"][0])


def uvw_to_fixed_centre(baselines_xyz: NDArray[np.float64], jd_utc: NDArray[np.float64],
                        ra_rad: float, dec_rad: float, longitude_rad: float,
                        latitude_rad: float, height_m: float) -> NDArray[np.float64]:
    """UVW (time, baseline, 3) of local-meridian baselines towards the fixed ICRS direction
    (``ra_rad``, ``dec_rad``) at each time (v to ICRS north)."""
    site = (longitude_rad, latitude_rad, height_m)
    pc = phase_centres("sidereal", dec_rad, ra_rad, jd_utc, *site)
    return uvw_towards(baselines_xyz, pc["last"], pc["app_ra"], pc["app_dec"], pc["frame_pa"])
