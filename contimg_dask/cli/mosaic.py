"""``contimg mosaic [IMAGE_OR_STORE ...] [--out FILE.fits] [--json]``: a PB²/σ²-weighted
linear mosaic of block images, selected by block list, time range, declination strip and RA
range (docs/mosaicking.md)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from contimg_dask.cli.options import (
    declination_deg,
    right_ascension_deg,
    unix_or_none,
    utc_time,
)
from contimg_dask.cli.outcome import user_path
from contimg_dask.config import PipelineConfig, config_hash
from contimg_dask.errors import InputError
from contimg_dask.io.system.atomic import (
    atomic_directory,
    atomic_file,
    check_replaceable,
    register_product_kind,
)

if TYPE_CHECKING:
    from contimg_dask.imaging.mosaic_inputs import Selection

#: The files ``--out FILE.fits`` writes beside the mosaic, by product kind.
OUT_SUFFIXES = {"mosaic": ".fits", "noise": ".noise.fits", "png": ".png",
                "provenance": ".mosaic.json"}
register_product_kind("png", lambda p: p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n")
register_product_kind("mosaic_json", lambda p: p.is_file() and p.name.endswith(".mosaic.json"))
_FILE_KINDS = {"mosaic": "fits", "noise": "fits", "png": "png", "provenance": "mosaic_json"}


def _selection(args: argparse.Namespace) -> Selection:
    from contimg_dask.imaging.mosaic_inputs import Selection

    if (args.ra_min is None) != (args.ra_max is None):
        raise InputError("--ra-min and --ra-max go together", stage="mosaic")
    blocks = tuple(b.strip() for value in args.blocks or [] for b in value.split(",") if b)
    return Selection(blocks=blocks, start_unix=unix_or_none(args.start),
                     end_unix=unix_or_none(args.end),
                     dec_min=args.dec_min, dec_max=args.dec_max, ra_min=args.ra_min,
                     ra_max=args.ra_max)


def _out_files(out: Path) -> dict[str, Path]:
    base = str(out)[: -len(".fits")] if out.name.endswith(".fits") else str(out)
    return {kind: Path(base + suffix) for kind, suffix in OUT_SUFFIXES.items()}


def _cmd_mosaic(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.imaging.mosaic_build import MosaicSettings
    from contimg_dask.imaging.mosaic_inputs import select_inputs
    from contimg_dask.imaging.mosaic_writer import new_mosaic
    from contimg_dask.stages.contract import Provenance
    from contimg_dask.stages.layout import images_dir, mosaics_dir
    from contimg_dask.stages.mosaic import MOSAIC_PRODUCTS, mosaic_products

    inputs = select_inputs(args.inputs or [images_dir(config)], _selection(args))
    settings = MosaicSettings.from_config(config.mosaic, workers=config.dask.n_workers)
    name = args.name or (f"mosaic-{inputs[0].block_id.replace(':', '')}-"
                         f"{inputs[-1].block_id.replace(':', '')}")
    images = tuple(str(i.image) for i in inputs)
    provenance = Provenance(inputs=images, config_hash=config_hash(config), command=" ".join(
        ["contimg", "--env", config.environment, "mosaic", *images])).to_dict()
    quicklook = config.mosaic.quicklook
    if args.out is None or not args.out.name.endswith(".fits"):
        final = args.out if args.out is not None else mosaics_dir(config) / name
        with atomic_directory(final, MOSAIC_PRODUCTS, overwrite=args.overwrite) as tmp:
            tmp.mkdir()
            outcome = new_mosaic(inputs, settings, tmp, name, provenance=provenance,
                                 quicklook=quicklook)
        files = {kind: final / path.name for kind, path in outcome.files.items()}
    else:
        files = _out_files(args.out)
        if not quicklook:
            files.pop("png")
        for kind, path in files.items():
            check_replaceable(path, _FILE_KINDS[kind], args.overwrite)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=args.out.parent,
                                         prefix=f".{args.out.name}.build-") as build:
            outcome = new_mosaic(inputs, settings, Path(build), name, provenance=provenance,
                                 quicklook=quicklook)
            with ExitStack() as stack:
                temporaries = {kind: stack.enter_context(atomic_file(
                    path, _FILE_KINDS[kind], args.overwrite)) for kind, path in files.items()}
                for kind, tmp in temporaries.items():
                    os.replace(outcome.files[kind], tmp)
    products = mosaic_products(files)
    if args.json:
        print(json.dumps([p.to_dict() for p in products], indent=2))
        return 0
    f = outcome.figures
    print(f"mosaic of {len(outcome.inputs)} block images: {f['nx']} x {f['ny']} pixels, beam "
          f"{f['beam_major_arcsec']:.1f}\" x {f['beam_minor_arcsec']:.1f}\", noise "
          f"{1e3 * f['mean_weight_noise_jy']:.3f} mJy/beam (mean weight)")
    for product in products:
        print(f"  {product.kind:<12} {product.path}")
    return 0


def add_mosaic_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``contimg mosaic`` on the ``contimg`` parser."""
    mos = sub.add_parser("mosaic", help="PB^2/sigma^2-weighted linear mosaic of block images "
                         "(FITS mosaic, noise map, quick-look)")
    mos.add_argument("inputs", nargs="*", type=user_path, metavar="IMAGE_OR_STORE",
                     help="block images (<block>.image.fits), image products directories, or "
                     "directories of them (default: <paths.products>/images)")
    mos.add_argument("--out", type=user_path,
                     help="FILE.fits: the mosaic, with FILE.noise.fits, FILE.png and "
                     "FILE.mosaic.json beside it; DIR: a mosaic directory with its "
                     "accumulators (default: <paths.products>/mosaics/<name>/)")
    mos.add_argument("--name", help="mosaic name (default: mosaic-<first block>-<last block>)")
    mos.add_argument("--blocks", action="append", metavar="ID[,ID...]",
                     help="only these block ids")
    mos.add_argument("--start", type=utc_time, help="only blocks starting at or after this "
                     "UTC time (ISO 8601)")
    mos.add_argument("--end", type=utc_time, help="only blocks starting before this UTC time")
    mos.add_argument("--dec-min", type=declination_deg, help="declination strip, deg")
    mos.add_argument("--dec-max", type=declination_deg, help="declination strip, deg")
    mos.add_argument("--ra-min", type=right_ascension_deg,
                     help="RA range, deg (--ra-min > --ra-max wraps through 0)")
    mos.add_argument("--ra-max", type=right_ascension_deg, help="RA range, deg")
    mos.add_argument("--overwrite", action="store_true",
                     help="replace the outputs even when they are not mosaics")
    mos.add_argument("--json", action="store_true",
                     help="print the products written as JSON (kind, path, checksum)")
    mos.set_defaults(func=_cmd_mosaic)

