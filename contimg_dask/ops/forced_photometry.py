"""Forced photometry: the flux density of a restoring-beam Gaussian at fixed pixel positions,
weighted by a local noise map, with neighbours fitted jointly.

The estimator is VAST's forced_phot (Murphy et al. 2021): for one isolated source at
``(x0, y0)`` with kernel ``K`` (the restoring beam, peak 1, centred on the sub-pixel position),
data ``d`` (Jy/beam, background removed) and local noise ``n`` (Jy/beam),

    S = Σ d K / n²  /  Σ K² / n²                                  (Jy)

Sources closer than ``cluster_beams`` beam FWHM are fitted together: the linear least-squares
system ``A S = b`` with ``A_ij = Σ K_i K_j / n²`` and ``b_i = Σ d K_i / n²``, solved for every
cluster at once (clusters stacked by size).

Errors. VAST's ``1/sqrt(Σ K²/n²)`` holds for independent pixels; an interferometric image's
noise is correlated over the synthesised beam. For noise whose correlation has the restoring
beam's shape (the residual image of a cleaned map), the variance of the estimator is

    var S = (A⁻¹)_ii · Σ K_i² · CORRELATED_NOISE_FACTOR,    CORRELATED_NOISE_FACTOR = 4/3

(for one isolated source with constant noise: (4/3) n²; the factor is (2/√3)² from the
Gaussian integrals ∫∫K(x)K(y)K(x−y) / (∫K²)², exact for Gaussian beams of any shape).

Pixels are ``(x, y)`` = (column, row), zero-based; beams are given as pixel-frame covariance
matrices (:func:`beam_covariance_pixels`).
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from contimg_dask.ops.background_mesh import mesh_at

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))
CORRELATED_NOISE_FACTOR = 4.0 / 3.0
#: Half-size of the fitting box, in units of the beam's major-axis σ (K < 1e-5 beyond).
BOX_SIGMAS = 5.0

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")


def beam_covariance_pixels(bmaj_deg: float, bmin_deg: float, bpa_deg: float,
                           pixel_to_sky: NDArray[np.float64]) -> NDArray[np.float64]:
    """The restoring beam as a 2x2 covariance matrix in pixels².

    ``bmaj_deg``/``bmin_deg``: FWHM (deg); ``bpa_deg``: position angle of the major axis, deg
    east of north; ``pixel_to_sky``: the 2x2 matrix taking a pixel offset ``(dx, dy)`` to a
    sky offset (east, north) in degrees (the celestial WCS's pixel scale matrix, whose first
    row is the RA-like intermediate coordinate, positive east).
    """
    theta = np.radians(bpa_deg)
    major = np.array([np.sin(theta), np.cos(theta)])
    minor = np.array([np.cos(theta), -np.sin(theta)])
    s_maj, s_min = bmaj_deg * FWHM_TO_SIGMA, bmin_deg * FWHM_TO_SIGMA
    sky = s_maj**2 * np.outer(major, major) + s_min**2 * np.outer(minor, minor)
    inverse = np.linalg.inv(pixel_to_sky)
    return inverse @ sky @ inverse.T


@_jit
def _kernel(dx: float, dy: float, qa: float, qb: float, qc: float) -> float:
    return np.exp(-0.5 * (qa * dx * dx + 2.0 * qb * dx * dy + qc * dy * dy))


@_jit
def _box_sums(image: NDArray, bkg_mesh: NDArray, rms_mesh: NDArray, box: float, x: NDArray,
              y: NDArray, quad: NDArray, half: int, pair_i: NDArray, pair_j: NDArray
              ) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray]:
    """Per source: Σ d K/n², Σ K²/n², Σ K², and whether the source's centre pixel is valid;
    per pair (i, j): Σ K_i K_j / n² over source i's box. ``d`` is the image less the
    background mesh, ``n`` the rms mesh (both interpolated); NaN pixels weigh nothing."""
    ny, nx = image.shape
    qa, qb, qc = quad[0], quad[1], quad[2]
    m = x.shape[0]
    b = np.zeros(m)
    akk = np.zeros(m)
    kk = np.zeros(m)
    valid = np.zeros(m, np.bool_)
    for i in range(m):
        cx, cy = int(np.rint(x[i])), int(np.rint(y[i]))
        if cx < 0 or cy < 0 or cx >= nx or cy >= ny:
            continue
        valid[i] = (np.isfinite(image[cy, cx])
                    and mesh_at(rms_mesh, box, float(cx), float(cy)) > 0)
        for py in range(max(0, cy - half), min(ny, cy + half + 1)):
            for px in range(max(0, cx - half), min(nx, cx + half + 1)):
                d = image[py, px] - mesh_at(bkg_mesh, box, float(px), float(py))
                n = mesh_at(rms_mesh, box, float(px), float(py))
                if not (np.isfinite(d) and n > 0):
                    continue
                k = _kernel(px - x[i], py - y[i], qa, qb, qc)
                w = 1.0 / (n * n)
                b[i] += d * k * w
                akk[i] += k * k * w
                kk[i] += k * k
    cross = np.zeros(pair_i.shape[0])
    for p in range(pair_i.shape[0]):
        i, j = pair_i[p], pair_j[p]
        cx, cy = int(np.rint(x[i])), int(np.rint(y[i]))
        for py in range(max(0, cy - half), min(ny, cy + half + 1)):
            for px in range(max(0, cx - half), min(nx, cx + half + 1)):
                n = mesh_at(rms_mesh, box, float(px), float(py))
                if not (np.isfinite(image[py, px]) and n > 0):
                    continue
                cross[p] += (_kernel(px - x[i], py - y[i], qa, qb, qc)
                             * _kernel(px - x[j], py - y[j], qa, qb, qc) / (n * n))
    return b, akk, kk, valid, cross


def clusters(x: NDArray, y: NDArray, radius_pixels: float) -> NDArray[np.int64]:
    """Cluster label of every position: positions closer than ``radius_pixels`` (directly or
    through a chain) share a label."""
    m = len(x)
    if m == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(radius_pixels, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _solve_clusters(labels: NDArray, b: NDArray, akk: NDArray, pair_i: NDArray,
                    pair_j: NDArray, cross: NDArray) -> tuple[NDArray, NDArray]:
    """Fluxes and (A⁻¹)_ii of every source: isolated ones directly, clusters of each size
    as one stacked solve."""
    flux = b / akk
    inv_diag = 1.0 / akk
    sizes = np.bincount(labels)
    if sizes.max(initial=1) < 2:
        return flux, inv_diag
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    slot = np.empty(len(labels), np.int64)  # position of each source within its cluster
    slot[order] = np.arange(len(labels)) - starts[labels[order]]
    stack = np.full(len(sizes), -1)
    for size in np.unique(sizes[sizes >= 2]):
        members_of = np.flatnonzero(sizes == size)
        stack[:] = -1
        stack[members_of] = np.arange(len(members_of))
        keep = stack[labels[order]] >= 0
        members = order[keep].reshape(len(members_of), size)
        a = np.zeros((len(members_of), size, size))
        rows = np.arange(len(members_of))[:, None]
        a[rows, np.arange(size), np.arange(size)] = akk[members]
        rhs = b[members]
        in_size = sizes[labels[pair_i]] == size
        k = stack[labels[pair_i[in_size]]]
        si, sj = slot[pair_i[in_size]], slot[pair_j[in_size]]
        np.add.at(a, (k, si, sj), 0.5 * cross[in_size])
        np.add.at(a, (k, sj, si), 0.5 * cross[in_size])
        inv = np.linalg.inv(a)
        flux[members] = np.einsum("kij,kj->ki", inv, rhs)
        inv_diag[members] = np.diagonal(inv, axis1=1, axis2=2)
    return flux, inv_diag


def forced_fluxes(image: NDArray, bkg_mesh: NDArray, rms_mesh: NDArray, box: float,
                  x: NDArray, y: NDArray, beam_cov_pixels: NDArray, cluster_beams: float = 1.5
                  ) -> dict[str, NDArray]:
    """Forced flux densities at pixel positions ``(x, y)`` (see the module docstring).

    ``image``: the plane (Jy/beam, NaN = blanked); ``bkg_mesh``, ``rms_mesh``: its local
    background and rms on a mesh of ``box``-pixel cells (ops/background_mesh.py, Jy/beam);
    ``beam_cov_pixels``: :func:`beam_covariance_pixels`.
    Returns arrays per position: ``flux_jy``, ``flux_err_jy``, ``cluster`` (label; shared by
    jointly fitted neighbours), ``cluster_size`` and ``valid`` (centre pixel on the image and
    not blanked; invalid positions have NaN flux).
    """
    x = np.ascontiguousarray(x, np.float64)
    y = np.ascontiguousarray(y, np.float64)
    precision = np.linalg.inv(beam_cov_pixels)
    quad = np.array([precision[0, 0], precision[0, 1], precision[1, 1]])
    sigma_major = float(np.sqrt(np.linalg.eigvalsh(beam_cov_pixels).max()))
    half = int(np.ceil(BOX_SIGMAS * sigma_major))
    fwhm_major = sigma_major / FWHM_TO_SIGMA
    labels = clusters(x, y, cluster_beams * fwhm_major)
    # every ordered pair of members of one cluster (clusters are small: a few sources)
    pair_i, pair_j = _cluster_pairs(labels)
    b, akk, kk, valid, cross = _box_sums(
        np.asarray(image), np.ascontiguousarray(bkg_mesh, np.float64),
        np.ascontiguousarray(rms_mesh, np.float64), float(box), x, y, quad, half, pair_i,
        pair_j)
    good = valid & (akk > 0)
    # an invalid member leaves its cluster: it gets its own label and no cross terms
    labels = np.where(good, labels, labels.max(initial=0) + 1 + np.arange(len(labels)))
    keep = good[pair_i] & good[pair_j]
    pair_i, pair_j, cross = pair_i[keep], pair_j[keep], cross[keep]
    _, labels = np.unique(labels, return_inverse=True)
    akk_safe = np.where(good, akk, 1.0)
    flux, inv_diag = _solve_clusters(labels, np.where(good, b, 0.0), akk_safe, pair_i,
                                     pair_j, cross)
    err = np.sqrt(inv_diag * kk * CORRELATED_NOISE_FACTOR)
    flux = np.where(good, flux, np.nan)
    err = np.where(good, err, np.nan)
    return {"flux_jy": flux, "flux_err_jy": err, "cluster": labels,
            "cluster_size": np.bincount(labels)[labels], "valid": good}


def _cluster_pairs(labels: NDArray) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every ordered pair (i, j), i != j, of positions sharing a cluster label."""
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
    multi = np.flatnonzero(sizes[labels] >= 2) if len(labels) else np.zeros(0, np.int64)
    if len(multi) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    order = multi[np.argsort(labels[multi], kind="stable")]
    group = labels[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], len(order)]
    i_list, j_list = [], []
    for size in np.unique(ends - starts):
        s = starts[(ends - starts) == size]
        idx = s[:, None] + np.arange(size)[None, :]
        ii = np.repeat(idx, size, axis=1)
        jj = np.tile(idx, (1, size))
        off = ii != jj
        i_list.append(order[ii[off]])
        j_list.append(order[jj[off]])
    return np.concatenate(i_list), np.concatenate(j_list)
