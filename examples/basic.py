"""Basic use: process every block of a directory, in observation order, as `contimg run`
does, and print what became of each.

    python examples/basic.py INCOMING [--root DIR] [--env ENV] [--stages ingest,flag,...]

``--root`` is where block stores, products and the state database go (``paths.root``);
``--stages`` replaces both recipes with these stages (default: the configured recipes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from contimg_dask.config import load_config
from contimg_dask.pipeline import Pipeline
from contimg_dask.pipeline.batch import run_directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("incoming", type=Path)
    parser.add_argument("--root", type=Path, default=Path("contimg-work"))
    parser.add_argument("--env", default="development")
    parser.add_argument("--stages", help="comma-separated stages for every block")
    args = parser.parse_args()

    overrides: dict[str, object] = {"paths.root": str(args.root.absolute())}
    if args.stages:
        steps = [{"stage": name} for name in args.stages.split(",")]
        overrides |= {"pipeline.recipes.calibrator": steps, "pipeline.recipes.target": steps}
    config = load_config(environment=args.env, overrides=overrides)

    # No Dask client: stages compute on Dask's default (threaded) scheduler in this process.
    with Pipeline(config) as pipeline:
        for outcome in run_directory(pipeline, args.incoming):
            print(f"{outcome.block_id}: {outcome.outcome} ({outcome.kind}), "
                  f"{len(outcome.products)} products")
            for product in outcome.products:
                print(f"    {product['kind']:<12} {product['path']}")
            for error in outcome.errors:
                print(f"    failed: {error.get('error')}: {error.get('message')}")


if __name__ == "__main__":
    main()
