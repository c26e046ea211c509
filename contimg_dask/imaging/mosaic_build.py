"""Building a linear mosaic out of core: Dask tasks over tiles of the output grid.

1. Survey (one task per input): read its primary beam, check it has finite pixels above the
   PB cutoff, sample the directions it covers (the footprint, every ``FOOTPRINT_STEP`` px).
2. Beams: the mosaic's restoring beam is the common beam of the inputs
   (ops/mosaic/beams.py); an input whose beam area is more than ``beam_tolerance`` below it
   is convolved to it first (its noise re-measured on its convolved residual).
3. Accumulate (one task per output tile): for each input whose footprint reaches the tile,
   read only the part of its image and PB that maps into the tile (FITS memory map),
   regrid both onto the tile (one coordinate map for the two planes): the map evaluated
   with the WCS every ``regrid_step_px`` pixels and splined in between, values interpolated
   by scipy (ops/mosaic/regrid.py), or with ``regrid_step_px: 0`` ``reproject_interp`` on
   every pixel (its coordinate transforms dominate the cost: benchmarks/mosaic.py); add
   PB·I/σ² and PB²/σ² to the tile's accumulators (zarr arrays, one chunk per tile: tasks
   never share a chunk).
4. Finalise (one task per tile): mosaic = S/W, noise = 1/√W into FITS files written through
   memory maps, tile by tile.

So a task holds one output tile and one input's cut-out at a time, never all inputs. The
accumulators stay beside the mosaic: adding blocks later runs step 3 for the new inputs only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from astropy.io import fits

from contimg_dask.errors import InputError, OutputError
from contimg_dask.imaging.mosaic_inputs import MosaicInput
from contimg_dask.imaging.products import celestial_wcs, read_plane, robust_noise
from contimg_dask.ops.mosaic import (
    GaussianBeam,
    MosaicGrid,
    accumulate,
    common_beam,
    contains,
    convolve_to_beam,
    finalise,
    grid_covering,
)
from contimg_dask.ops.mosaic.regrid import ORDERS, pixel_map, sample

if TYPE_CHECKING:
    from dask.distributed import Client

#: Footprints are sampled every this many input pixels.
FOOTPRINT_STEP = 8
ACCUMULATOR_TYPE = "mosaic_accumulators"
#: Input pixels read beyond those that map into a tile (0.27^16 ~ 1e-9 of a spline's edge).
WINDOW_MARGIN = 16


@dataclass(frozen=True)
class MosaicSettings:
    """How to mosaic (the ``mosaic`` configuration section, docs/mosaicking.md)."""

    pb_cutoff: float
    tile_pixels: int
    interpolation: str
    beam_tolerance: float
    projection: str
    cell_arcsec: float | None
    regrid_step_px: int = 32
    workers: int = 2

    @classmethod
    def from_config(cls, cfg: Any, workers: int = 2) -> MosaicSettings:
        return cls(cfg.pb_cutoff, cfg.tile_pixels, cfg.interpolation, cfg.beam_tolerance,
                   cfg.projection, cfg.cell_arcsec, cfg.regrid_step_px, workers)


@dataclass(frozen=True)
class Footprint:
    """Directions (ICRS, deg) an input covers above the PB cutoff, sampled."""

    ra_deg: np.ndarray
    dec_deg: np.ndarray


def _plane_memmap(path: Path) -> tuple[np.ndarray, fits.HDUList]:
    hdul = fits.open(path, memmap=True)
    plane = hdul[0].data
    while plane.ndim > 2:
        plane = plane[0]
    return plane, hdul


def survey(item: MosaicInput, pb_cutoff: float) -> Footprint:
    """The footprint of ``item``; InputError when its image is NaN wherever its beam is above
    the cutoff, or its beam never reaches the cutoff."""
    pb, pb_header = read_plane(item.pb)
    image, _ = read_plane(item.image)
    with np.errstate(invalid="ignore"):
        inside = np.isfinite(pb) & (pb >= pb_cutoff)
    if not inside.any():
        raise InputError(f"the primary beam never reaches the mosaic's PB cutoff {pb_cutoff}",
                         file=item.image, block=item.block_id, stage="mosaic")
    if not np.isfinite(image[inside]).any():
        raise InputError("the image is NaN everywhere inside the PB cutoff (a blank image)",
                         file=item.image, block=item.block_id, stage="mosaic")
    mask = inside[::FOOTPRINT_STEP, ::FOOTPRINT_STEP]
    y, x = np.nonzero(mask)
    # The edge of the image counts too (a footprint cut by the image's border).
    ra, dec = celestial_wcs(pb_header).wcs_pix2world(x * FOOTPRINT_STEP, y * FOOTPRINT_STEP, 0)
    return Footprint(np.asarray(ra, float), np.asarray(dec, float))


def grid_for(footprints: list[Footprint], cell_deg: float, projection: str) -> MosaicGrid:
    """The grid covering every footprint (circular statistics, ops/mosaic/grid.py)."""
    return grid_covering(np.concatenate([f.ra_deg for f in footprints]),
                         np.concatenate([f.dec_deg for f in footprints]), cell_deg, projection,
                         margin_px=FOOTPRINT_STEP + 2)


def pixel_box(footprint: Footprint, grid: MosaicGrid, cell_deg: float
              ) -> tuple[int, int, int, int] | None:
    """The footprint's bounding box on ``grid`` (y0, y1, x0, x1; clipped), None if outside."""
    x, y = grid.wcs().wcs_world2pix(footprint.ra_deg, footprint.dec_deg, 0)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    pad = int(np.ceil(FOOTPRINT_STEP * cell_deg / grid.cell_deg)) + 2
    y0, y1 = max(0, int(y[ok].min()) - pad), min(grid.ny, int(y[ok].max()) + pad + 1)
    x0, x1 = max(0, int(x[ok].min()) - pad), min(grid.nx, int(x[ok].max()) + pad + 1)
    return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None


@dataclass(frozen=True)
class Contribution:
    """An input ready to accumulate: the image to regrid (the original, or its convolution
    to the mosaic's beam), its PB, its noise σ (Jy/beam) and its box on the output grid."""

    block_id: str
    image: str
    pb: str
    noise_jy: float
    box: tuple[int, int, int, int]


def needs_convolution(beam: GaussianBeam, target: GaussianBeam, tolerance: float) -> bool:
    """True when ``target`` contains ``beam`` and is larger in area by more than
    ``tolerance`` (a fraction)."""
    return contains(target, beam) and target.area_deg2 / beam.area_deg2 - 1.0 > tolerance


def beam_fits(beam: GaussianBeam, target: GaussianBeam, tolerance: float) -> bool:
    """True when an input of ``beam`` can join a mosaic of beam ``target``: contained in it
    (then convolved to it if needed), or with both axes within ``tolerance`` of it."""
    return contains(target, beam) or (beam.major_deg <= target.major_deg * (1 + tolerance)
                                      and beam.minor_deg <= target.minor_deg * (1 + tolerance))


def convolve_to(item: MosaicInput, target: GaussianBeam, pb_cutoff: float, scratch: Path
                ) -> tuple[Path, float]:
    """``item``'s image convolved to ``target`` (Jy/beam of ``target``: scaled by the beam
    area ratio, so point-source peaks are kept) in ``scratch``, and its noise: re-measured on
    the residual convolved the same way, or scaled by √(area ratio) if it has no residual."""
    image, header = read_plane(item.image)
    blank = ~np.isfinite(image)
    convolved = convolve_to_beam(np.where(blank, 0.0, image), target, item.beam, item.cell_deg)
    if convolved is None:
        return item.image, item.noise_jy
    ratio = target.area_deg2 / item.beam.area_deg2
    convolved *= ratio
    if blank.any():
        spread = convolve_to_beam(blank.astype(float), target, item.beam, item.cell_deg)
        convolved[spread > 1e-3] = np.nan
    if item.residual is not None:
        residual, _ = read_plane(item.residual)
        pb, _ = read_plane(item.pb)
        smooth = ratio * convolve_to_beam(np.nan_to_num(residual), target, item.beam,
                                          item.cell_deg)
        noise = robust_noise(smooth[pb >= pb_cutoff])
    else:
        noise = item.noise_jy * float(np.sqrt(ratio))
    out = scratch / f"{item.image.stem}.beam-convolved.fits"
    header = header.copy()
    header["BMAJ"], header["BMIN"], header["BPA"] = (target.major_deg, target.minor_deg,
                                                     target.pa_deg)
    shape = tuple(header[f"NAXIS{i}"] for i in range(header["NAXIS"], 0, -1))
    fits.PrimaryHDU(convolved.astype(np.float32).reshape(shape), header).writeto(out)
    return out, noise


def _tile_wcs(grid: MosaicGrid, tile: tuple[int, int, int, int]) -> Any:
    y0, y1, x0, x1 = tile
    return grid.wcs()[y0:y1, x0:x1]


def _input_window(tile: tuple[int, int, int, int], grid: MosaicGrid, input_wcs: Any,
                  shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """The part of an input (rows, columns) that maps into ``tile``, with ``WINDOW_MARGIN``
    pixels to spare: a cubic spline's edge effect decays by ~0.27 per pixel, so a cut-out
    edge closer than that would show at the tile's edges (a seam)."""
    y0, y1, x0, x1 = tile
    edge_x = np.concatenate([np.linspace(x0, x1 - 1, 33), np.full(33, x1 - 1),
                             np.linspace(x0, x1 - 1, 33), np.full(33, x0)])
    edge_y = np.concatenate([np.full(33, y0), np.linspace(y0, y1 - 1, 33),
                             np.full(33, y1 - 1), np.linspace(y0, y1 - 1, 33)])
    ra, dec = grid.wcs().wcs_pix2world(edge_x, edge_y, 0)
    x, y = input_wcs.wcs_world2pix(ra, dec, 0)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    m = WINDOW_MARGIN
    r0, r1 = max(0, int(np.floor(y[ok].min())) - m), min(shape[0], int(np.ceil(y[ok].max())) + m)
    c0, c1 = max(0, int(np.floor(x[ok].min())) - m), min(shape[1], int(np.ceil(x[ok].max())) + m)
    if r1 - r0 < 2 or c1 - c0 < 2:
        return None
    return slice(r0, r1), slice(c0, c1)


def regrid(stack: np.ndarray, input_wcs: Any, tile_wcs: Any, shape: tuple[int, int],
           interpolation: str, step: int) -> np.ndarray:
    """The planes of ``stack`` (on ``input_wcs``) regridded onto the tile (``tile_wcs``,
    ``shape``): ``step`` 0 with ``reproject_interp`` (every pixel's coordinates
    transformed), else with the coordinate map evaluated every ``step`` pixels
    (ops/mosaic/regrid.py)."""
    if step > 0:
        def transform(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return input_wcs.wcs_world2pix(*tile_wcs.wcs_pix2world(x, y, 0), 0)

        mapped = pixel_map(transform, shape, step)
        if mapped is not None:
            return np.stack([sample(plane, *mapped, ORDERS[interpolation]) for plane in stack])
    from reproject import reproject_interp

    return reproject_interp((stack, input_wcs), tile_wcs, shape_out=(len(stack), *shape),
                            order=interpolation, return_footprint=False,
                            roundtrip_coords=False)


def accumulate_tile(accumulators: str, grid_dict: dict, tile: tuple[int, int, int, int],
                    contributions: list[Contribution], pb_cutoff: float,
                    interpolation: str, regrid_step: int, target: str | None = None) -> int:
    """Add ``contributions`` to the accumulators of one output tile (a Dask task), writing
    the sums into ``target`` (accumulators of the same grid and chunks; default: in place).
    Returns the number of (input, pixel) samples added."""
    grid = MosaicGrid.from_dict(grid_dict)
    y0, y1, x0, x1 = tile
    group = zarr.open_group(accumulators, mode="r")
    s = np.asarray(group["weighted_sum"][y0:y1, x0:x1], np.float64)
    w = np.asarray(group["weight_sum"][y0:y1, x0:x1], np.float64)
    tile_wcs = _tile_wcs(grid, tile)
    added = 0
    for c in contributions:
        image, image_hdul = _plane_memmap(Path(c.image))
        pb, pb_hdul = _plane_memmap(Path(c.pb))
        try:
            input_wcs = celestial_wcs(image_hdul[0].header)
            window = _input_window(tile, grid, input_wcs, image.shape)
            if window is None:
                continue
            stack = np.stack([np.asarray(image[window], np.float64),
                              np.asarray(pb[window], np.float64)])
        finally:
            image_hdul.close()
            pb_hdul.close()
        added += accumulate(s, w, *regrid(stack, input_wcs[window], tile_wcs,
                                          (y1 - y0, x1 - x0), interpolation, regrid_step),
                            c.noise_jy, pb_cutoff)
    out = zarr.open_group(target or accumulators, mode="r+")
    out["weighted_sum"][y0:y1, x0:x1] = s
    out["weight_sum"][y0:y1, x0:x1] = w
    return added


def create_accumulators(path: Path, grid: MosaicGrid, tile_pixels: int,
                        attrs: dict[str, Any]) -> None:
    """Empty (zero) accumulators Σ(w·I/PB) and Σw for ``grid``, one zarr chunk per tile."""
    group = zarr.open_group(path, mode="w")
    for name in ("weighted_sum", "weight_sum"):
        group.create_array(name, shape=grid.shape, chunks=(tile_pixels, tile_pixels),
                           dtype="float64", fill_value=0.0)
    group.attrs.update({"type": ACCUMULATOR_TYPE, "grid": grid.to_dict(),
                        "tile_pixels": tile_pixels, **attrs})


def read_accumulator_attrs(path: Path) -> dict[str, Any]:
    return dict(zarr.open_group(path, mode="r").attrs)


def update_accumulator_attrs(path: Path, **attrs: Any) -> None:
    zarr.open_group(path, mode="r+").attrs.update(attrs)


def run_tasks(tasks: list[Any], settings: MosaicSettings, client: Client | None) -> list[Any]:
    """Compute Dask ``tasks`` on ``client`` or, without one, on local threads."""
    import dask

    if not tasks:
        return []
    if client is not None:
        return list(client.gather(client.compute(tasks)))
    return list(dask.compute(*tasks, scheduler="threads", num_workers=settings.workers))


def tiles_reached(grid: MosaicGrid, contributions: list[Contribution], tile_pixels: int
                  ) -> list[tuple[tuple[int, int, int, int], list[Contribution]]]:
    """The output tiles (y0, y1, x0, x1) that ``contributions`` reach, each with those
    reaching it."""
    reached = []
    for tile in grid.tiles(tile_pixels):
        y0, y1, x0, x1 = tile
        reaching = [c for c in contributions if c.box[0] < y1 and c.box[1] > y0
                    and c.box[2] < x1 and c.box[3] > x0]
        if reaching:
            reached.append((tile, reaching))
    return reached


def accumulate_all(accumulators: Path, grid: MosaicGrid, contributions: list[Contribution],
                   settings: MosaicSettings, tile_pixels: int, client: Client | None,
                   target: Path | None = None) -> int:
    """Add ``contributions`` to the accumulators (into ``target`` if given, which then
    receives only the tiles they reach): one Dask task per tile they reach."""
    import dask

    tasks = [dask.delayed(accumulate_tile, pure=False)(
        str(accumulators), grid.to_dict(), tile, reaching, settings.pb_cutoff,
        settings.interpolation, settings.regrid_step_px,
        None if target is None else str(target))
        for tile, reaching in tiles_reached(grid, contributions, tile_pixels)]
    return int(sum(run_tasks(tasks, settings, client)))


def _image_header(header: fits.Header) -> fits.Header:
    """``header`` as the primary header of a 2-D float32 image."""
    out = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2),
                       ("NAXIS1", header["NAXIS1"]), ("NAXIS2", header["NAXIS2"])])
    for card in header.cards:
        if card.keyword not in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"):
            out.append(card)
    return out


def allocate_fits(path: Path, header: fits.Header) -> None:
    """An all-zero float32 FITS file of ``header``'s 2-D shape, to fill through a memmap."""
    nx, ny = header["NAXIS1"], header["NAXIS2"]
    out = _image_header(header)
    out.tofile(path, overwrite=True)
    with path.open("r+b") as f:
        f.seek(len(out.tostring()) + ((nx * ny * 4 + 2879) // 2880) * 2880 - 1)
        f.write(b"\0")


def rewrite_fits_header(path: Path, header: fits.Header) -> None:
    """Replace, in place, the header of a FITS file made by :func:`allocate_fits` with
    ``header`` (same image shape, same header length: values change, not the cards)."""
    new = _image_header(header).tostring().encode("ascii")
    if len(new) != len(fits.getheader(path).tostring()):
        raise OutputError(f"the new header of {path} does not fit in place", file=path)
    with path.open("r+b") as f:
        f.write(new)
        f.flush()
        os.fsync(f.fileno())


def _fits_memmap(path: Path) -> np.memmap:
    """The 2-D float32 data of a FITS file made by :func:`allocate_fits`, writable."""
    header = fits.getheader(path)
    return np.memmap(path, dtype=">f4", mode="r+", offset=len(header.tostring()),
                     shape=(header["NAXIS2"], header["NAXIS1"]))


def finalise_tile(accumulators: str, tile: tuple[int, int, int, int], mosaic: str,
                  noise: str) -> tuple[float, int]:
    """Write one tile of the mosaic and noise FITS (a Dask task). Returns Σ 1/noise² and the
    covered pixel count (for the mosaic's median-free summary)."""
    y0, y1, x0, x1 = tile
    group = zarr.open_group(accumulators, mode="r")
    m, n = finalise(np.asarray(group["weighted_sum"][y0:y1, x0:x1]),
                    np.asarray(group["weight_sum"][y0:y1, x0:x1]))
    for path, plane in ((mosaic, m), (noise, n)):
        target = _fits_memmap(Path(path))
        target[y0:y1, x0:x1] = plane
        target.flush()
        del target
    covered = np.isfinite(n)
    return float(np.sum(1.0 / n[covered] ** 2)), int(covered.sum())


def write_fits(accumulators: Path, grid: MosaicGrid, paths: dict[str, Path],
               settings: MosaicSettings, tile_pixels: int, client: Client | None,
               tiles: list[tuple[int, int, int, int]] | None = None
               ) -> dict[str, list[float]]:
    """Write ``tiles`` (default: all) of the mosaic and noise FITS (already allocated) from
    the accumulators, one task per tile. Returns per tile (key ``"y0,x0"``) Σ 1/noise²
    (Jy/beam)⁻² and the covered pixel count."""
    import dask

    tiles = list(grid.tiles(tile_pixels)) if tiles is None else tiles
    tasks = [dask.delayed(finalise_tile, pure=False)(str(accumulators), tile,
                                                     str(paths["mosaic"]), str(paths["noise"]))
             for tile in tiles]
    results = run_tasks(tasks, settings, client)
    return {f"{t[0]},{t[2]}": [r[0], r[1]] for t, r in zip(tiles, results, strict=True)}


def coverage_summary(tile_summary: dict[str, list[float]]) -> dict[str, float]:
    """The covered area (pixels) and the noise at the mean weight (Jy/beam) of a mosaic,
    from its per-tile summary (:func:`write_fits`)."""
    covered = int(sum(v[1] for v in tile_summary.values()))
    weight = sum(v[0] for v in tile_summary.values())
    return {"covered_pixels": covered,
            "mean_weight_noise_jy": float(1 / np.sqrt(weight / covered)) if covered else
            float("nan")}


def mosaic_beam(inputs: list[MosaicInput]) -> GaussianBeam:
    """The common restoring beam of the inputs."""
    return common_beam([i.beam for i in inputs])


def prepare(inputs: list[MosaicInput], footprints: list[Footprint], grid: MosaicGrid,
            beam: GaussianBeam, settings: MosaicSettings, scratch: Path,
            client: Client | None, warn: Callable[[str], None]) -> list[Contribution]:
    """Contributions of ``inputs`` to ``grid``: convolved to ``beam`` where needed (Dask
    tasks), boxed on the grid; inputs that fall outside the grid are reported to ``warn``."""
    import dask

    convolve = [i for i in inputs if needs_convolution(i.beam, beam, settings.beam_tolerance)]
    done = dict(zip([i.block_id for i in convolve], run_tasks(
        [dask.delayed(convolve_to, pure=False)(i, beam, settings.pb_cutoff, scratch)
         for i in convolve], settings, client), strict=True))
    contributions = []
    for item, footprint in zip(inputs, footprints, strict=True):
        box = pixel_box(footprint, grid, item.cell_deg)
        if box is None:
            warn(f"block {item.block_id} lies outside the mosaic's grid: not added")
            continue
        image, noise = done.get(item.block_id, (item.image, item.noise_jy))
        contributions.append(Contribution(item.block_id, str(image), str(item.pb),
                                          float(noise), box))
    return contributions


def surveys(inputs: list[MosaicInput], settings: MosaicSettings,
            client: Client | None) -> list[Footprint]:
    """The footprints of ``inputs`` (one Dask task each)."""
    import dask

    return run_tasks([dask.delayed(survey, pure=False)(i, settings.pb_cutoff) for i in inputs],
                     settings, client)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    os.chmod(path, 0o644)
