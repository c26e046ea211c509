"""Quick-look PNGs of block images: WCS axes, restoring beam, colour bar, an asinh stretch
from -3 sigma to the peak (faint sources and the brightest both visible)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.visualization import AsinhStretch, ImageNormalize

from contimg_dask.imaging.products import celestial_wcs, read_plane


def quicklook_png(fits_path: Path, png_path: Path, title: str, noise_jy: float,
                  max_pixels: int = 1200) -> Path:
    """Render ``fits_path`` to ``png_path`` (binned to at most ``max_pixels`` a side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    plane, header = read_plane(fits_path)
    wcs = celestial_wcs(header)
    factor = max(1, int(np.ceil(max(plane.shape) / max_pixels)))
    if factor > 1:  # max over bins keeps point sources visible
        ny, nx = (s // factor * factor for s in plane.shape)
        plane = np.nanmax(plane[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor),
                          axis=(1, 3))
        wcs = wcs.slice((slice(None, None, factor), slice(None, None, factor)))
    finite = plane[np.isfinite(plane)]
    vmax = float(finite.max()) if finite.size else 1.0
    vmin = -3 * noise_jy if np.isfinite(noise_jy) and noise_jy > 0 else float(finite.min())
    norm = ImageNormalize(vmin=vmin, vmax=max(vmax, vmin + 1e-12),
                          stretch=AsinhStretch(a=0.02))
    fig = plt.figure(figsize=(8, 7), dpi=100)
    ax = fig.add_subplot(projection=wcs)
    im = ax.imshow(plane, origin="lower", cmap="inferno", norm=norm, interpolation="nearest")
    ax.set_xlabel("Right ascension (ICRS)")
    ax.set_ylabel("Declination (ICRS)")
    ax.coords.grid(color="white", alpha=0.25, linestyle=":")
    ax.set_title(title, fontsize=10)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label(f"{header.get('BUNIT', 'Jy/beam')}")
    if "BMAJ" in header:
        cell_deg = abs(float(header["CDELT2"])) * factor
        # Beam drawn 10x enlarged so that it is visible on a degrees-wide field.
        scale = 10.0
        ax.add_patch(Ellipse((0.08 * plane.shape[1], 0.08 * plane.shape[0]),
                             width=scale * header["BMIN"] / cell_deg,
                             height=scale * header["BMAJ"] / cell_deg, angle=header["BPA"],
                             edgecolor="cyan", facecolor="none", lw=1.5))
        ax.text(0.14 * plane.shape[1], 0.06 * plane.shape[0],
                f"beam x{scale:.0f}: {header['BMAJ'] * 3600:.1f}\" x "
                f"{header['BMIN'] * 3600:.1f}\"", color="cyan", fontsize=8)
    fig.savefig(png_path)
    plt.close(fig)
    return png_path


__all__ = ["quicklook_png"]
