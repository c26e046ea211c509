"""The inputs of a mosaic: block image products (the ``image`` stage's directories), found,
selected and checked before anything is written.

An input is a block's apparent image ``<stem>.image.fits`` (Jy/beam), its primary beam
``<stem>.pb.fits`` on the same grid, its residual ``<stem>.residual.fits`` (for re-measuring
the noise after a beam convolution) and the measured noise (Jy/beam) of the ``.image.json``
sidecar (or, for images without one, the header's ``CT_NOISE``). Every problem is an
:class:`~contimg_dask.errors.InputError` naming the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from contimg_dask.errors import InputError
from contimg_dask.imaging.products import celestial_wcs
from contimg_dask.io.system.checksum import file_sha256
from contimg_dask.ops.mosaic import GaussianBeam
from contimg_dask.utc import parse_utc_unix

SIDECAR_SUFFIX = ".image.json"
IMAGE_SUFFIX = ".image.fits"


@dataclass(frozen=True)
class MosaicInput:
    """One block image to mosaic. ``ra_deg``/``dec_deg``: the image's reference direction
    (ICRS, deg); ``time_unix``: the block's start (from its id); ``checksum``: SHA-256 of
    the image FITS (a changed image is re-mosaicked)."""

    block_id: str
    image: Path
    pb: Path
    residual: Path | None
    noise_jy: float
    beam: GaussianBeam
    ra_deg: float
    dec_deg: float
    cell_deg: float
    time_unix: float
    checksum: str

    def to_dict(self) -> dict[str, Any]:
        return {"block_id": self.block_id, "image": str(self.image), "pb": str(self.pb),
                "residual": None if self.residual is None else str(self.residual),
                "noise_jy": self.noise_jy, "beam": self.beam.to_dict(), "ra_deg": self.ra_deg,
                "dec_deg": self.dec_deg, "cell_deg": self.cell_deg,
                "time_unix": self.time_unix, "checksum": self.checksum}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MosaicInput:
        return cls(d["block_id"], Path(d["image"]), Path(d["pb"]),
                   None if d["residual"] is None else Path(d["residual"]), float(d["noise_jy"]),
                   GaussianBeam(**d["beam"]), float(d["ra_deg"]), float(d["dec_deg"]),
                   float(d["cell_deg"]), float(d["time_unix"]), d["checksum"])


def block_time_unix(block_id: str) -> float:
    """A block id (ISO UTC, ``YYYY-MM-DDTHH:MM:SS``, colons optional) as Unix seconds."""
    text = block_id if ":" in block_id else (
        f"{block_id[:13]}:{block_id[13:15]}:{block_id[15:]}" if len(block_id) == 17 else block_id)
    return parse_utc_unix(text)


def _header(path: Path, what: str, image: Path) -> fits.Header:
    if not path.is_file():
        raise InputError(f"the image has no {what} ({path.name} is missing beside it)",
                         file=image, stage="mosaic")
    try:
        with fits.open(path, memmap=True) as hdul:
            return hdul[0].header.copy()
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable {what} FITS: {exc}", file=path, stage="mosaic") from None


def _check_wcs(header: fits.Header, path: Path) -> tuple[float, float, float]:
    """(RA, Dec, cell) in degrees of an equatorial image with square pixels."""
    try:
        wcs = celestial_wcs(header)
    except Exception as exc:  # astropy raises many types for broken WCS keywords
        raise InputError(f"incompatible WCS: {exc}", file=path, stage="mosaic") from None
    ctype = [str(c) for c in wcs.wcs.ctype]
    if wcs.naxis != 2 or not (ctype[0].startswith("RA") and ctype[1].startswith("DEC")):
        raise InputError(f"incompatible WCS: celestial axes {ctype} are not RA/DEC",
                         file=path, stage="mosaic")
    if (wcs.wcs.radesys or "ICRS").strip() not in ("ICRS", "FK5"):
        raise InputError(f"incompatible WCS: frame {wcs.wcs.radesys} (ICRS or FK5 J2000 only)",
                         file=path, stage="mosaic")
    from astropy.wcs.utils import proj_plane_pixel_scales

    cell, other = (float(v) for v in np.abs(proj_plane_pixel_scales(wcs)))
    if not np.isfinite(cell) or cell <= 0 or abs(other - cell) > 1e-6 * cell:
        raise InputError(f"incompatible WCS: pixels are not square ({cell} x {other} deg)",
                         file=path, stage="mosaic")
    return float(wcs.wcs.crval[0]) % 360.0, float(wcs.wcs.crval[1]), cell


def _same_grid(a: fits.Header, b: fits.Header) -> bool:
    keys = ("NAXIS1", "NAXIS2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CDELT1", "CDELT2",
            "CTYPE1", "CTYPE2")
    return all(a.get(k) == b.get(k) if isinstance(a.get(k), str) else
               np.isclose(float(a.get(k, np.nan)), float(b.get(k, np.nan)), rtol=1e-9)
               for k in keys)


def read_input(image: Path) -> MosaicInput:
    """The mosaic input of a block's apparent image ``<stem>.image.fits`` (or of the image
    products directory holding it), checked: readable, equatorial WCS with square pixels,
    a primary beam on the same grid, a restoring beam, a positive finite noise."""
    image = Path(image)
    if image.is_dir():
        found = sorted(image.glob(f"*{IMAGE_SUFFIX}"))
        if len(found) != 1:
            raise InputError(f"expected one *{IMAGE_SUFFIX} in the image products directory, "
                             f"found {len(found)}", file=image, stage="mosaic")
        image = found[0]
    if image.name.endswith(".image.pbcor.fits"):
        image = image.with_name(image.name.replace(".image.pbcor.fits", IMAGE_SUFFIX))
    if not image.name.endswith(IMAGE_SUFFIX):
        raise InputError(f"not a block image (expected <block>{IMAGE_SUFFIX})", file=image,
                         stage="mosaic")
    stem = image.name[: -len(IMAGE_SUFFIX)]
    header = _header(image, "image", image)
    ra, dec, cell = _check_wcs(header, image)
    pb_path = image.with_name(f"{stem}.pb.fits")
    if not _same_grid(header, _header(pb_path, "primary beam", image)):
        raise InputError(f"incompatible WCS: the primary beam {pb_path.name} is not on the "
                         "image's grid", file=image, stage="mosaic")
    if not all(k in header for k in ("BMAJ", "BMIN", "BPA")):
        raise InputError("the image has no restoring beam (BMAJ/BMIN/BPA)", file=image,
                         stage="mosaic")
    beam = GaussianBeam(float(header["BMAJ"]), float(header["BMIN"]), float(header["BPA"]))
    sidecar = image.with_name(f"{stem}{SIDECAR_SUFFIX}")
    block_id, noise = header.get("CT_BLOCK", stem), header.get("CT_NOISE")
    if sidecar.is_file():
        try:
            document = json.loads(sidecar.read_text())
            block_id = document["block"]["block_id"]
            noise = document["figures"].get("noise_jy")
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"unreadable sidecar {sidecar.name}: {exc!r}", file=image,
                             stage="mosaic") from None
    if noise is None or not np.isfinite(float(noise)) or float(noise) <= 0:
        raise InputError(f"the image has no usable measured noise ({noise!r}; expected "
                         f"figures.noise_jy in {sidecar.name} or CT_NOISE in its header)",
                         file=image, stage="mosaic")
    residual = image.with_name(f"{stem}.residual.fits")
    try:
        time_unix = block_time_unix(str(block_id))
    except ValueError:
        raise InputError(f"block id {block_id!r} is not an ISO time", file=image,
                         stage="mosaic") from None
    return MosaicInput(str(block_id), image.absolute(), pb_path.absolute(),
                       residual.absolute() if residual.is_file() else None, float(noise), beam,
                       ra, dec, cell, time_unix, file_sha256(image))


def find_images(paths: list[Path]) -> list[Path]:
    """Block images named by ``paths``: image FITS files, image products directories, or
    directories of those (an ``images`` products root)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file() or (path.is_dir() and (any(path.glob(f"*{SIDECAR_SUFFIX}"))
                                                 or any(path.glob(f"*{IMAGE_SUFFIX}")))):
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.glob(f"*/*{IMAGE_SUFFIX}"))
        else:
            raise InputError("no such image or image directory", file=path, stage="mosaic")
    return found


@dataclass(frozen=True)
class Selection:
    """Which inputs to mosaic: block ids, a time range (Unix s, [start, end)), a declination
    strip and an RA range (deg; ``ra_min > ra_max`` wraps through 0), all optional."""

    blocks: tuple[str, ...] = ()
    start_unix: float | None = None
    end_unix: float | None = None
    dec_min: float | None = None
    dec_max: float | None = None
    ra_min: float | None = None
    ra_max: float | None = None

    def accepts(self, item: MosaicInput) -> bool:
        if self.blocks and item.block_id not in self.blocks and item.block_id.replace(
                ":", "") not in self.blocks:
            return False
        if self.start_unix is not None and item.time_unix < self.start_unix:
            return False
        if self.end_unix is not None and item.time_unix >= self.end_unix:
            return False
        if self.dec_min is not None and item.dec_deg < self.dec_min:
            return False
        if self.dec_max is not None and item.dec_deg > self.dec_max:
            return False
        if self.ra_min is not None and self.ra_max is not None:
            lo, hi, ra = self.ra_min % 360, self.ra_max % 360, item.ra_deg % 360
            return lo <= ra <= hi if lo <= hi else (ra >= lo or ra <= hi)
        return True

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.__dict__.items() if v not in (None, ())]
        return ", ".join(parts) or "everything"


def select_inputs(paths: list[Path], selection: Selection) -> list[MosaicInput]:
    """The checked inputs among ``paths`` that ``selection`` accepts, in time order.

    Raises
    ------
    InputError
        An image fails its checks (naming it), or nothing is selected.
    """
    images = find_images(paths)
    inputs = [item for item in map(read_input, images) if selection.accepts(item)]
    if not inputs:
        raise InputError(f"empty selection: none of the {len(images)} images found matches "
                         f"({selection.describe()})",
                         file=", ".join(map(str, paths)) or None, stage="mosaic")
    ids = [i.block_id for i in inputs]
    duplicates = sorted({b for b in ids if ids.count(b) > 1})
    if duplicates:
        raise InputError(f"block(s) {', '.join(duplicates)} selected twice",
                         file=next(str(i.image) for i in inputs if i.block_id == duplicates[0]),
                         stage="mosaic")
    return sorted(inputs, key=lambda i: i.time_unix)

