"""A light curve as a PNG: raw and normalised flux densities with 1σ error bars against
time, upper limits as downward triangles, epochs that could not be normalised marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from contimg_dask.io.system.atomic import atomic_file, register_product_kind
from contimg_dask.photometry.normalise import FLAG_EPOCH_UNNORMALISED
from contimg_dask.photometry.tables import file_starts_with

#: Product kind of light-curve pictures (recognised by the PNG signature).
LIGHTCURVE_PNG = "lightcurve_png"

register_product_kind(LIGHTCURVE_PNG, lambda p: file_starts_with(p, b"\x89PNG\r\n\x1a\n"))


def plot_lightcurve(rows: pd.DataFrame, name: str, path: Path) -> Path:
    """Draw ``rows`` (one source's measurements) to ``path`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = rows["mjd"].to_numpy(float)
    upper = rows["upper_limit"].to_numpy(bool)
    unnormalised = (rows["flags"].to_numpy() & FLAG_EPOCH_UNNORMALISED) != 0
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    mjd0 = np.floor(t.min())
    ax.errorbar(t - mjd0, 1e3 * rows["flux_jy"], 1e3 * rows["flux_err_jy"], fmt="o",
                ms=3, color="0.6", label="raw", zorder=1)
    ok = ~unnormalised & ~upper
    ax.errorbar(t[ok] - mjd0, 1e3 * rows["norm_flux_jy"].to_numpy()[ok],
                1e3 * rows["norm_err_jy"].to_numpy()[ok], fmt="o", ms=4, color="C0",
                label="normalised", zorder=2)
    if upper.any():
        ax.plot(t[upper] - mjd0, 1e3 * rows["upper_limit_jy"].to_numpy()[upper], "v",
                color="C3", label="upper limit (raw)")
    if unnormalised.any():
        for x in t[unnormalised] - mjd0:
            ax.axvline(x, color="C1", alpha=0.3, lw=1)
        ax.plot([], [], color="C1", alpha=0.3, label="epoch not normalised")
    ax.set_xlabel(f"MJD - {mjd0:.0f}")
    ax.set_ylabel("flux density (mJy)")
    ax.set_title(f"{name}: {len(rows)} epochs")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, LIGHTCURVE_PNG) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
