"""Variability statistics of light curves from running sums: O(1) per source per new epoch,
no pairwise table.

Per source (fluxes ``f_i`` with errors ``σ_i``, weights ``w_i = 1/σ_i²``, N epochs):

- weighted mean ``μ_w = Σ w f / Σ w`` (Jy);
- ``η`` = weighted reduced χ² about ``μ_w``: ``Σ w (f - μ_w)² / (N - 1)``; identical to VAST's
  ``N/(N-1) (⟨w f²⟩ - ⟨w f⟩²/⟨w⟩)``;
- ``V`` = modulation index ``s / f̄`` with ``s`` the sample standard deviation (ddof 1) and
  ``f̄`` the unweighted mean (VAST's ``v``);
- ``max_deviation`` = largest fractional departure of any epoch from ``μ_w``;
- per pair of consecutive epochs (a, b): ``Vs = (f_a - f_b)/sqrt(σ_a² + σ_b²)`` and
  ``m = 2 (f_a - f_b)/(f_a + f_b)`` (VAST's two-epoch metrics, restricted to consecutive
  epochs); kept are the largest ``|Vs|``, the largest ``|m|`` and the largest ``|Vs|`` among
  the pairs with ``|m| >= m_min`` (the two-epoch candidate statistic).

The sums are kept as weighted and unweighted Welford accumulators (mean and sum of squared
deviations), stable where ``Σ w f² - (Σ w f)²/Σ w`` would cancel. An epoch that is not the
newest for a source (measured out of order) or that replaces an earlier measurement cannot be
folded in: the caller rebuilds that source's sums from its light curve
(:func:`sums_from_lightcurves`).

ESE search (:func:`dip_search`): a matched box-dip filter over the whole light curve, for every
start epoch and every width of ``widths_days``: ``z = (μ_out - μ_in) / sqrt(1/W_in +
1/W_out)`` with ``μ``/``W`` the weighted means/weight sums inside and outside the window;
the statistic is the largest ``z``, reported with the dip's fractional depth, start and width.
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")

#: The running sums per source, as columns of one table.
SUM_COLUMNS = ("n", "sum_w", "mean_w", "m2_w", "mean", "m2", "flux_min", "flux_max",
               "last_mjd", "last_flux", "last_err", "vs_max", "m_max", "vs_sig")


def empty_sums(n_sources: int) -> dict[str, NDArray[np.float64]]:
    """Sums of ``n_sources`` sources without epochs."""
    sums = {k: np.zeros(n_sources) for k in SUM_COLUMNS}
    sums["flux_min"][:] = np.inf
    sums["flux_max"][:] = -np.inf
    sums["last_mjd"][:] = -np.inf
    sums["last_flux"][:] = np.nan
    sums["last_err"][:] = np.nan
    return sums


def add_epoch(sums: dict[str, NDArray], mjd: float, flux: NDArray, err: NDArray,
              m_min: float) -> NDArray[np.bool_]:
    """Fold one epoch at ``mjd`` (fluxes and errors in Jy, NaN = not measured) into ``sums``
    in place, for the sources where it is the newest epoch. Returns the mask of measured
    sources for which it is NOT the newest: those need :func:`sums_from_lightcurves`."""
    late = np.zeros(len(flux), np.bool_)
    _add_epoch(*(sums[k] for k in SUM_COLUMNS), float(mjd),
               np.ascontiguousarray(flux, np.float64), np.ascontiguousarray(err, np.float64),
               float(m_min), late)
    return late


@_jit
def _add_epoch(n: NDArray, sum_w: NDArray, mean_w: NDArray, m2_w: NDArray, mean: NDArray,
               m2: NDArray, flux_min: NDArray, flux_max: NDArray, last_mjd: NDArray,
               last_flux: NDArray, last_err: NDArray, vs_max: NDArray, m_max: NDArray,
               vs_sig: NDArray, mjd: float, flux: NDArray, err: NDArray, m_min: float,
               late: NDArray) -> None:
    """The O(1) update of every source (see :func:`add_epoch`; Welford's weighted and
    unweighted updates)."""
    for i in range(flux.shape[0]):
        f, e = flux[i], err[i]
        if not (np.isfinite(f) and np.isfinite(e) and e > 0):
            continue
        if last_mjd[i] >= mjd:
            late[i] = True
            continue
        w = 1.0 / (e * e)
        n[i] += 1.0
        sum_w[i] += w
        delta = f - mean_w[i]
        mean_w[i] += delta * w / sum_w[i]
        m2_w[i] += w * delta * (f - mean_w[i])
        delta = f - mean[i]
        mean[i] += delta / n[i]
        m2[i] += delta * (f - mean[i])
        flux_min[i] = min(flux_min[i], f)
        flux_max[i] = max(flux_max[i], f)
        if np.isfinite(last_flux[i]):
            a, ea = last_flux[i], last_err[i]
            vs = abs((a - f) / np.sqrt(ea * ea + e * e))
            m = abs(2.0 * (a - f) / (a + f))
            vs_max[i] = max(vs_max[i], vs)
            m_max[i] = max(m_max[i], m)
            if m >= m_min:
                vs_sig[i] = max(vs_sig[i], vs)
        last_mjd[i], last_flux[i], last_err[i] = mjd, f, e


def pair_metrics(flux_a: NDArray, err_a: NDArray, flux_b: NDArray, err_b: NDArray
                 ) -> tuple[NDArray, NDArray]:
    """VAST's two-epoch ``Vs`` and ``m`` of epochs a then b (signs: a minus b)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        vs = (flux_a - flux_b) / np.sqrt(err_a**2 + err_b**2)
        m = 2.0 * (flux_a - flux_b) / (flux_a + flux_b)
    return vs, m


def sums_from_lightcurves(mjd: NDArray, flux: NDArray, err: NDArray, m_min: float
                          ) -> dict[str, NDArray[np.float64]]:
    """The sums of whole light curves at once: ``flux``, ``err`` (Jy) shaped (sources,
    epochs), NaN where a source was not measured; ``mjd`` (epochs,) in any order."""
    order = np.argsort(mjd, kind="stable")
    mjd, flux, err = np.asarray(mjd)[order], flux[:, order], err[:, order]
    measured = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    f = np.where(measured, flux, 0.0)
    w = np.where(measured, 1.0 / np.where(measured, err, 1.0)**2, 0.0)
    n = measured.sum(axis=1).astype(float)
    sums = empty_sums(flux.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        sw = w.sum(axis=1)
        mean_w = np.where(sw > 0, (w * f).sum(axis=1) / sw, 0.0)
        mean = np.where(n > 0, f.sum(axis=1) / n, 0.0)
    sums.update(n=n, sum_w=sw, mean_w=mean_w, mean=mean,
                m2_w=(w * (f - mean_w[:, None])**2).sum(axis=1),
                m2=(measured * (f - mean[:, None])**2).sum(axis=1),
                flux_min=np.where(measured, flux, np.inf).min(axis=1),
                flux_max=np.where(measured, flux, -np.inf).max(axis=1))
    # the previous measured epoch of every epoch (forward fill of the last valid index)
    index = np.where(measured, np.arange(flux.shape[1])[None, :], -1)
    last = np.maximum.accumulate(index, axis=1)
    prev = np.concatenate([np.full((flux.shape[0], 1), -1), last[:, :-1]], axis=1)
    pair = measured & (prev >= 0)
    rows = np.arange(flux.shape[0])[:, None]
    pf, pe = flux[rows, np.maximum(prev, 0)], err[rows, np.maximum(prev, 0)]
    vs, m = pair_metrics(pf, pe, flux, err)
    vs, m = np.where(pair, np.abs(vs), 0.0), np.where(pair, np.abs(m), 0.0)
    sums.update(vs_max=vs.max(axis=1, initial=0.0), m_max=m.max(axis=1, initial=0.0),
                vs_sig=np.where(m >= m_min, vs, 0.0).max(axis=1, initial=0.0))
    newest = last[:, -1] if flux.shape[1] else np.full(flux.shape[0], -1)
    has = newest >= 0
    sums["last_mjd"] = np.where(has, mjd[np.maximum(newest, 0)] if len(mjd) else 0, -np.inf)
    sums["last_flux"] = np.where(has, flux[np.arange(flux.shape[0]), np.maximum(newest, 0)],
                                 np.nan)
    sums["last_err"] = np.where(has, err[np.arange(flux.shape[0]), np.maximum(newest, 0)],
                                np.nan)
    return sums


def metrics(sums: dict[str, NDArray]) -> dict[str, NDArray[np.float64]]:
    """The variability metrics of every source from its sums (NaN where undefined: η and V
    need 2 epochs)."""
    n = sums["n"]
    with np.errstate(divide="ignore", invalid="ignore"):
        many = n >= 2
        eta = np.where(many, sums["m2_w"] / (n - 1), np.nan)
        v = np.where(many, np.sqrt(sums["m2"] / (n - 1)) / sums["mean"], np.nan)
        mu = np.where(n > 0, sums["mean_w"], np.nan)
        deviation = np.maximum(sums["flux_max"] - mu, mu - sums["flux_min"]) / np.abs(mu)
    return {"n_epochs": n, "weighted_mean_jy": mu, "eta": eta, "v": v,
            "max_deviation": deviation, "vs_max": sums["vs_max"], "m_max": sums["m_max"],
            "vs_sig": sums["vs_sig"]}


def dip_search(mjd: NDArray, flux: NDArray, err: NDArray, widths_days: NDArray,
               min_inside: int = 3) -> dict[str, NDArray[np.float64]]:
    """The matched box-dip statistic of every light curve (see the module docstring).

    ``flux``, ``err``: (sources, epochs), Jy, NaN = not measured; ``mjd``: (epochs,);
    ``widths_days``: the dip durations tried. A window needs ``min_inside`` measured epochs
    inside and as many outside. Returns per source ``ese_z`` (0 when no window qualifies),
    ``ese_depth`` (1 - μ_in/μ_out), ``ese_start_mjd``, ``ese_width_days``.
    """
    order = np.argsort(mjd, kind="stable")
    t = np.asarray(mjd, float)[order]
    widths = np.asarray(widths_days, float)
    ends = np.array([np.searchsorted(t, t + w, side="left") for w in widths], np.int64)
    ends = ends.reshape(len(widths), len(t))
    best = np.zeros((flux.shape[0], 4))
    _dip_search(np.asarray(flux, np.float64), np.asarray(err, np.float64), order, t, widths,
                ends, int(min_inside), best)
    return {"ese_z": best[:, 0], "ese_depth": best[:, 1], "ese_start_mjd": best[:, 2],
            "ese_width_days": best[:, 3]}


@_jit
def _dip_search(flux: NDArray, err: NDArray, order: NDArray, t: NDArray, widths: NDArray,
                ends: NDArray, min_inside: int, best: NDArray) -> None:
    """Per source: cumulative weight, weighted flux and count over the time-ordered epochs,
    then every (width, start) window in O(1)."""
    n_epochs = order.shape[0]
    cw = np.zeros(n_epochs + 1)
    cf = np.zeros(n_epochs + 1)
    cn = np.zeros(n_epochs + 1, np.int64)
    for s in range(flux.shape[0]):
        for k in range(n_epochs):
            f, e = flux[s, order[k]], err[s, order[k]]
            ok = np.isfinite(f) and np.isfinite(e) and e > 0
            w = 1.0 / (e * e) if ok else 0.0
            cw[k + 1] = cw[k] + w
            cf[k + 1] = cf[k] + (w * f if ok else 0.0)
            cn[k + 1] = cn[k] + (1 if ok else 0)
        for a in range(widths.shape[0]):
            for i in range(n_epochs):
                j = ends[a, i]
                n_in = cn[j] - cn[i]
                n_out = cn[n_epochs] - n_in
                if n_in < min_inside or n_out < min_inside:
                    continue
                w_in = cw[j] - cw[i]
                w_out = cw[n_epochs] - w_in
                mu_in = (cf[j] - cf[i]) / w_in
                mu_out = (cf[n_epochs] - (cf[j] - cf[i])) / w_out
                z = (mu_out - mu_in) / np.sqrt(1.0 / w_in + 1.0 / w_out)
                if z > best[s, 0]:
                    best[s, 0] = z
                    best[s, 1] = 1.0 - mu_in / mu_out
                    best[s, 2] = t[i]
                    best[s, 3] = widths[a]


def threshold_at(n_epochs: NDArray, table_epochs: list[int], table_values: list[float]
                 ) -> NDArray[np.float64]:
    """A calibrated threshold at ``n_epochs``: linear in log N between the calibrated epoch
    counts, the end values beyond them."""
    n = np.maximum(np.asarray(n_epochs, float), 1.0)
    return np.interp(np.log(n), np.log(np.asarray(table_epochs, float)),
                     np.asarray(table_values, float))
