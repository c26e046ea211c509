"""``contimg image STORE [--out DIR] [--json]``: image one block (the ``image`` stage)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contimg_dask.config import PipelineConfig


def _cmd_image(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.stages.image import ImageStage
    from contimg_dask.stages.layout import stored_block

    store = Path(args.store).absolute()
    if args.engine:
        config = config.model_copy(update={"imaging": config.imaging.model_copy(
            update={"engine": args.engine})})
    block = stored_block(store)
    result = ImageStage(Path(args.out).absolute() if args.out else None,
                        keep_ms=args.keep_ms).run(block, config)
    if args.json:
        print(json.dumps([p.to_dict() for p in result.products], indent=2))
        return 0
    f = result.figures
    print(f"block {result.block_id} imaged with {f['engine']} ({f['deconvolver']}) in "
          f"{result.seconds:.0f} s: noise {1e3 * f['noise_jy']:.3f} mJy/beam, peak "
          f"{f['peak_jy']:.4g} Jy/beam, dynamic range {f['dynamic_range']:.0f}"
          f"{'' if f['calibrated'] else ' (UNCALIBRATED)'}")
    for product in result.products:
        print(f"  {product.kind:<12} {product.path}")
    return 0


def add_imaging_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``contimg image`` on the ``contimg`` parser."""
    img = sub.add_parser("image", help="image a calibrated block (FITS image, PB-corrected "
                         "image, residual, PB, model, quick-looks)")
    img.add_argument("store", help="block store")
    img.add_argument("--out", help="products root (default: <paths.products>/images); the "
                     "block's products go to <out>/<block id>/")
    img.add_argument("--engine", choices=["tclean", "wsclean"],
                     help="imaging engine (default: imaging.engine)")
    img.add_argument("--keep-ms", action=argparse.BooleanOptionalAction, default=None,
                     help="keep the temporary Measurement Set (default: imaging.keep_ms)")
    img.add_argument("--json", action="store_true",
                     help="print the products written as JSON (kind, path, checksum)")
    img.set_defaults(func=_cmd_image)
