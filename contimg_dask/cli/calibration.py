"""``contimg calibrators`` and ``contimg calibrate solve|apply|export|import``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from contimg_dask.cli.options import add_overwrite_option
from contimg_dask.cli.outcome import user_path
from contimg_dask.config import PipelineConfig
from contimg_dask.coords.time import unix_to_datetime


def _cmd_calibrators(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.science.calibrators import find_calibrators

    catalog, candidates, best = find_calibrators(Path(args.store), config, args.catalog)
    if args.json:
        print(json.dumps({"catalog": str(catalog), "best": best and best.name,
                          "candidates": [dataclasses.asdict(c) for c in candidates]},
                         indent=2))
        return 0 if best else 1
    print(f"catalogue: {catalog}")
    print(f"{'NAME':<12}{'FLUX':>8}{'DDEC':>8}{'OFFSET':>8}{'APPARENT':>10}  "
          f"{'TRANSIT (UTC)':<21}VERDICT")
    for c in candidates:
        transit = unix_to_datetime(c.transit_unix).strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{c.name:<12}{c.catalog_flux_jy:>7.2f} {c.dec_offset_deg:>+7.2f} "
              f"{c.closest_offset_deg:>7.2f} {c.apparent_flux_jy:>9.2f}  {transit:<21}"
              f"{c.reason}")
    print(f"best calibrator: {best.name if best else 'none'}")
    return 0 if best else 1


def _cmd_solve(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.stages.calibrate_solve import CalibrateSolveStage
    from contimg_dask.stages.layout import stored_block

    stage = CalibrateSolveStage(out=args.out, catalog=args.catalog, calibrator=args.calibrator,
                                overwrite=args.overwrite)
    result = stage.run(stored_block(args.store), config)
    summary = {"solutions": str(result.product("solutions").path), "seconds": result.seconds,
               **result.figures}
    print(json.dumps(summary, indent=2) if args.json else
          f"solved on {summary['calibrator']} (refant {summary['refant']}): "
          f"bandpass median SNR {summary['bandpass_median_snr']:.0f}, "
          f"{100 * summary['bandpass_flagged_fraction']:.1f} % flagged; gains median SNR "
          f"{summary['gain_median_snr']:.0f} -> {args.out}")
    return 0


def _cmd_apply(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.stages.calibrate_apply import CalibrateApplyStage
    from contimg_dask.stages.layout import stored_block

    stage = CalibrateApplyStage(solutions=args.solutions, materialise=args.materialise)
    summary = stage.run(stored_block(args.store), config).figures
    how = "materialised" if summary["materialised"] else "on the fly"
    print(f"corrected {args.store} with {args.solutions} (from block "
          f"{summary['solutions_block']}, {how}): {100 * summary['flagged_fraction']:.2f} % "
          "flagged by solutions")
    return 0


def _cmd_export(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.processing.calibration_tables import export_to_casa

    for table in export_to_casa(args.solutions, args.ms, args.out, config,
                                overwrite=args.overwrite):
        print(table)
    return 0


def _cmd_import(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.processing.calibration_tables import import_from_casa

    print(import_from_casa(args.bandpass, args.gains, args.block_store, args.out, config,
                           overwrite=args.overwrite))
    return 0


def add_calibration_commands(sub: argparse._SubParsersAction) -> None:
    """Register the calibration commands on the ``contimg`` parser."""
    cal = sub.add_parser("calibrators", help="calibrators transiting a block, and the best")
    cal.add_argument("store", type=user_path, help="block store")
    cal.add_argument("--catalog", type=user_path,
                     help="calibrator catalogue CSV (default: configuration)")
    cal.add_argument("--json", action="store_true", help="JSON output")
    cal.set_defaults(func=_cmd_calibrators)

    calib = sub.add_parser("calibrate", help="solve or apply calibration")
    steps = calib.add_subparsers(dest="step", required=True)
    solve = steps.add_parser("solve", help="bandpass and gains from a calibrator block")
    solve.add_argument("store", type=user_path, help="calibrator block store")
    solve.add_argument("--out", required=True, type=user_path, help="solutions store to write")
    add_overwrite_option(solve)
    solve.add_argument("--catalog", type=user_path,
                       help="calibrator catalogue CSV (default: configuration)")
    solve.add_argument("--calibrator", help="calibrator name (default: the best in the block)")
    solve.add_argument("--json", action="store_true", help="JSON summary")
    solve.set_defaults(func=_cmd_solve)
    apply = steps.add_parser("apply", help="correct a block with solutions")
    apply.add_argument("store", type=user_path, help="block store")
    apply.add_argument("--solutions", required=True, type=user_path, help="solutions store")
    apply.add_argument("--materialise", action=argparse.BooleanOptionalAction, default=None,
                       help="also write the corrected data into the store (default: "
                            "calibration.materialise_corrected)")
    apply.set_defaults(func=_cmd_apply)
    export = steps.add_parser("export", help="solutions to CASA tables <OUT>.B and <OUT>.G")
    export.add_argument("solutions", type=user_path, help="solutions store")
    export.add_argument("--ms", required=True, type=user_path,
                        help="the Measurement Set the tables are for")
    export.add_argument("--out", required=True, type=user_path, help="table path prefix")
    add_overwrite_option(export)
    export.set_defaults(func=_cmd_export)
    imp = steps.add_parser("import", help="CASA bandpass and gain tables to a solutions store")
    imp.add_argument("--bandpass", required=True, type=user_path, help="CASA B Jones table")
    imp.add_argument("--gains", required=True, type=user_path, help="CASA G Jones table")
    imp.add_argument("--block", required=True, type=user_path, dest="block_store",
                     help="a block store of the tables' strip")
    imp.add_argument("--out", required=True, type=user_path, help="solutions store to write")
    add_overwrite_option(imp)
    imp.set_defaults(func=_cmd_import)
