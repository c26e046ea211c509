"""The ``contimg`` command."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

from contimg_dask import __version__
from contimg_dask.cli.archive import add_archive_commands
from contimg_dask.cli.calibration import add_calibration_commands
from contimg_dask.cli.imaging import add_imaging_commands
from contimg_dask.cli.monitoring import add_monitoring_commands
from contimg_dask.cli.mosaic import add_mosaic_commands
from contimg_dask.cli.options import (
    add_overwrite_option,
    declination_deg,
    positive_int,
    right_ascension_deg,
    utc_time,
)
from contimg_dask.cli.outcome import run, user_path
from contimg_dask.cli.photometry import add_photometry_commands
from contimg_dask.cli.pipeline import add_pipeline_commands
from contimg_dask.cli.state import add_state_commands
from contimg_dask.cli.watch import add_watch_commands
from contimg_dask.config import PipelineConfig, load_config
from contimg_dask.errors import ContimgError
from contimg_dask.logs import configure_logging, get_logger

log = get_logger(__name__)

#: Arguments naming paths a command reads (checked apart from its --out).
INPUT_ARGUMENTS = ("source", "inputs", "store", "solutions", "ms", "bandpass", "gains",
                   "block_store", "catalog")
#: Those of them that are products (directories nothing may be written into).
PRODUCT_INPUTS = ("store", "solutions", "ms", "bandpass", "gains", "block_store")


def _subbands(values: list[str] | None, option: str, n_subbands: int) -> frozenset[int]:
    """Subband numbers given as NN (repeated or comma-separated), each in 0..n_subbands-1."""
    out = set()
    for value in values or []:
        for part in value.split(","):
            if not part.strip().isdigit() or int(part) >= n_subbands:
                raise ContimgError(f"{option} {part!r}: subbands are numbered 00.."
                                   f"{n_subbands - 1:02d}", key="telescope.band.n_subbands")
            out.add(int(part))
    return frozenset(out)


def _parse_overrides(pairs: list[str]) -> dict[str, object]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ContimgError(f"--set expects KEY=VALUE, got {pair!r}", key=pair)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _cmd_simulate(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.simulate import Faults, SimulationOptions, simulate_blocks

    if args.preset not in config.simulation.presets:
        raise ContimgError(f"unknown preset '{args.preset}' (known: "
                           f"{', '.join(config.simulation.presets)})",
                           key="simulation.presets")
    n_sb = config.telescope.band.n_subbands
    options = SimulationOptions(
        preset=args.preset,
        n_blocks=args.blocks,
        seed=args.seed,
        start=args.start,
        pointing_dec_deg=args.dec,
        catalog=args.catalog,
        random_sources=not args.no_random_sources,
        calibrator=args.calibrator,
        transit=args.transit,
        noise=not args.no_noise,
        gains=not args.no_gains,
        rfi=not args.no_rfi,
        positive_channel_width=args.positive_channel_width,
        faults=Faults(missing=_subbands(args.missing, "--missing", n_sb),
                      truncated=_subbands(args.truncate, "--truncate", n_sb),
                      shifted_time=_subbands(args.shift_time, "--shift-time", n_sb)),
    )
    summaries = simulate_blocks(config, args.out, options)
    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        for s in summaries:
            print(f"{s['block_id']}  {len(s['files']):2d} files  {s['n_sources']:3d} sources  "
                  f"{s['seconds']:6.1f} s  truth: {Path(s['truth']).name}")
    return 0


def _print_discovery(result: dict) -> None:
    print(f"{'BLOCK':<21}{'STATUS':<12}{'FILES':>6}  {'MISSING':<20}PROBLEMS")
    for block in result["blocks"]:
        missing = ",".join(f"{m:02d}" for m in block["missing_subbands"]) or "-"
        print(f"{block['block_id']:<21}{block['status']:<12}{block['n_files']:>3}/16  "
              f"{missing:<20}{len(block['problems']) or '-'}")
    problems = [p for b in result["blocks"] for p in b["problems"]] + result["problems"]
    if problems:
        print("\nproblems:")
        for p in problems:
            print(f"  {Path(p['path']).name}: {p['kind']}: {p['reason']}")


def _cmd_blocks(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.io.uvh5.discovery import discover_blocks

    directory = args.incoming or config.paths.incoming
    result = discover_blocks(directory, config.blocks).to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_discovery(result)
    return 0


def _block_files(args: argparse.Namespace, config: PipelineConfig) -> tuple[list[Path], str]:
    """SOURCE is subband files, or a directory plus --block (the block id)."""
    from contimg_dask.io.uvh5.discovery import discover_blocks

    sources = [Path(s) for s in args.source]
    if len(sources) == 1 and sources[0].is_dir():
        found = discover_blocks(sources[0], config.blocks)
        blocks = {b.block_id: b for b in found.blocks}
        if args.block is None:
            raise ContimgError(f"{sources[0]} is a directory: name the block with --block "
                               f"(found: {', '.join(blocks) or 'none'})", file=sources[0])
        if args.block not in blocks:
            raise ContimgError(f"no block {args.block} in {sources[0]} (found: "
                               f"{', '.join(blocks) or 'none'})", file=sources[0])
        block = blocks[args.block]
        for problem in block.problems:
            log.warning("skipping %s: %s", problem.path, problem.reason)
        return [Path(f.path) for _, f in sorted(block.files.items())], block.block_id
    return sources, args.block or sources[0].name[:19]


def _cmd_ingest(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.stages import BlockRef
    from contimg_dask.stages.ingest import IngestStage

    files, block_id = _block_files(args, config)
    result = IngestStage(overwrite=args.overwrite).run(
        BlockRef(block_id, args.out, tuple(files)), config)
    print(result.product("block_store").path)
    return 0


def _cmd_rephase(args: argparse.Namespace, config: PipelineConfig) -> int:
    import numpy as np

    from contimg_dask.stages.layout import stored_block
    from contimg_dask.stages.rephase import RephaseStage

    if (args.ra is None) != (args.dec is None):
        raise ContimgError("give both --ra and --dec, or neither")
    centre = None if args.ra is None else (np.radians(args.ra), np.radians(args.dec))
    stage = RephaseStage(centre_rad=centre, materialise=args.materialise)
    figures = stage.run(stored_block(args.store), config).figures
    how = ("visibilities stored" if figures["materialised"]
           else "visibilities rotated on the fly")
    print(f"rephased {args.store} to ICRS ({figures['ra_deg']:.6f}, {figures['dec_deg']:.6f}) "
          f"deg ({how})")
    return 0


def _cmd_export(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.stages.export import ExportStage
    from contimg_dask.stages.layout import stored_block

    stage = ExportStage(args.format, out=args.out, data_group=args.data_group,
                        spw_layout=args.spw_layout, overwrite=args.overwrite)
    print(stage.run(stored_block(args.store), config).product(args.format).path)
    return 0


def _cmd_flag(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.processing.flag import list_flag_versions, restore_flags
    from contimg_dask.stages.flag import FlagStage
    from contimg_dask.stages.layout import stored_block

    store = Path(args.store)
    if args.list:
        listing = list_flag_versions(store)
        for name, version in listing["versions"].items():
            mark = "*" if name == listing["active"] else " "
            fraction = version.get("fractions", {}).get("block")
            shown = "" if fraction is None else f"  {100 * fraction:.2f} % flagged"
            print(f"{mark} {name:<12} {version['variable']:<14} {version['created']}{shown}")
        return 0
    if args.restore:
        restore_flags(store, args.restore)
        print(f"active flag version: {args.restore}")
        return 0
    figures = FlagStage(args.version).run(stored_block(store), config).figures
    print(f"flagged {100 * figures['flagged_fraction']:.2f} % of cross-correlations "
          f"(version {figures['flag_version']})")
    return 0


def _cmd_demo(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.cli.demo import run_demo

    return run_demo(config, Path(args.out), preset=args.preset, n_blocks=args.blocks)


def _cmd_config(args: argparse.Namespace, config: PipelineConfig) -> int:
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return 0


def _cmd_casa_check(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.casa import casa_health

    report = casa_health(config)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contimg", description="DSA-110 continuum imaging pipeline (Dask).")
    parser.add_argument("--version", action="version", version=f"contimg-dask {__version__}")
    parser.add_argument("--env", help="configuration environment (development, production, "
                        "testing); default $CONTIMG_ENV or development")
    parser.add_argument("--config", type=user_path,
                        help="base configuration file or directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration key, e.g. --set telescope.sefd_jy=7000")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write simulated DSA-110 blocks (UVH5 + truth)")
    sim.add_argument("out", type=user_path, help="output directory")
    sim.add_argument("--preset", default="small", help="size preset: full or small")
    sim.add_argument("--blocks", type=positive_int, default=1,
                     help="consecutive blocks (309 s apart)")
    sim.add_argument("--seed", type=int, help="random seed (default: configuration)")
    sim.add_argument("--start", type=utc_time, help="UTC start of the first block, ISO 8601")
    sim.add_argument("--dec", type=declination_deg, help="pointing declination, degrees (apparent)")
    sim.add_argument("--catalog", type=user_path,
                     help="sky catalogue CSV instead of random sources")
    sim.add_argument("--no-random-sources", action="store_true", help="no random sky")
    sim.add_argument("--calibrator", action="store_true",
                     help="add a bright calibrator transiting the first block")
    sim.add_argument("--transit", metavar="NAME",
                     help="point at calibrator NAME (calibration catalogue) and start the "
                          "first block so that it transits the block's middle")
    sim.add_argument("--no-noise", action="store_true", help="no thermal noise")
    sim.add_argument("--no-gains", action="store_true", help="unit gains, flat bandpasses")
    sim.add_argument("--no-rfi", action="store_true", help="no RFI")
    sim.add_argument("--missing", action="append", metavar="NN",
                     help="leave out subband NN (repeat or comma-separate)")
    sim.add_argument("--truncate", action="append", metavar="NN",
                     help="truncate subband NN's file")
    sim.add_argument("--shift-time", action="append", metavar="NN",
                     help="give subband NN a different time axis")
    sim.add_argument("--positive-channel-width", action="store_true",
                     help="store channel_width positive, as older correlator versions did")
    sim.add_argument("--json", action="store_true", help="JSON summary")
    sim.set_defaults(func=_cmd_simulate)

    blk = sub.add_parser("blocks", help="group subband files into blocks and check them")
    blk.add_argument("incoming", nargs="?", type=user_path,
                     help="directory (default: paths.incoming)")
    blk.add_argument("--json", action="store_true", help="JSON output")
    blk.set_defaults(func=_cmd_blocks)

    ing = sub.add_parser("ingest", help="UVH5 subband files to a block store (MSv4 zarr)")
    ing.add_argument("source", nargs="+", type=user_path,
                     help="subband files, or one directory with --block")
    ing.add_argument("--block", help="block id (first file's timestamp) when SOURCE is a "
                     "directory")
    ing.add_argument("--out", required=True, type=user_path,
                     help="the block store to write (BLOCK.zarr)")
    add_overwrite_option(ing)
    ing.set_defaults(func=_cmd_ingest)

    reph = sub.add_parser("rephase", help="recompute UVWs, rephase to one ICRS centre")
    reph.add_argument("store", type=user_path, help="block store")
    reph.add_argument("--ra", type=right_ascension_deg,
                      help="ICRS right ascension, deg (default: HA 0 / "
                      "pointing dec at the block's mid-time)")
    reph.add_argument("--dec", type=declination_deg, help="ICRS declination, deg")
    reph.add_argument("--materialise", action=argparse.BooleanOptionalAction, default=None,
                      help="also store the rotated visibilities (default: "
                           "store.materialise_rephased; otherwise readers rotate on the fly)")
    reph.set_defaults(func=_cmd_rephase)

    exp = sub.add_parser("export", help="export a block store to MS, UVFITS, MIRIAD or UVH5")
    exp.add_argument("store", type=user_path, help="block store")
    exp.add_argument("--format", required=True, choices=["ms", "uvfits", "miriad", "uvh5"])
    exp.add_argument("--out", required=True, type=user_path, help="output path")
    add_overwrite_option(exp)
    exp.add_argument("--data-group", default="rephased", help="data group to export")
    exp.add_argument("--spw-layout", default="per_subband", choices=["per_subband", "single"],
                     help="MS spectral windows: one per subband (default) or one")
    exp.set_defaults(func=_cmd_export)

    flg = sub.add_parser("flag", help="flag a block store (RFI, bad data), with flag versions")
    flg.add_argument("store", type=user_path, help="block store")
    flg.add_argument("--version", default="rfi", help="name of the flag version to write")
    flg.add_argument("--list", action="store_true", help="list the saved flag versions")
    flg.add_argument("--restore", metavar="NAME", help="make a saved flag version active")
    flg.set_defaults(func=_cmd_flag)

    add_calibration_commands(sub)
    add_state_commands(sub)
    add_imaging_commands(sub)
    add_monitoring_commands(sub)
    add_pipeline_commands(sub)
    add_archive_commands(sub)
    add_photometry_commands(sub)
    add_mosaic_commands(sub)
    add_watch_commands(sub)

    demo = sub.add_parser("demo", help="the end-to-end demo on simulated data, on a local "
                          "Dask cluster")
    demo.add_argument("--out", default="demo-output", type=user_path, help="working directory")
    demo.add_argument("--preset", default="small")
    demo.add_argument("--blocks", type=positive_int, default=2)
    demo.set_defaults(func=_cmd_demo)

    cfg = sub.add_parser("config", help="print the validated configuration")
    cfg.set_defaults(func=_cmd_config)

    casa = sub.add_parser("casa-check", help="check CASA and its measures data, offline")
    casa.set_defaults(func=_cmd_casa_check)
    return parser


def _inputs(args: argparse.Namespace) -> list[Path]:
    """The paths a command reads (they must not be its output nor under it)."""
    paths = []
    for name in INPUT_ARGUMENTS:
        value = getattr(args, name, None)
        paths += [v for v in (value if isinstance(value, list) else [value])
                  if isinstance(v, Path)]
    return paths


def _check_output_apart(args: argparse.Namespace) -> None:
    """The output may not be an input, hold one, or lie inside an input product."""
    out = getattr(args, "out", None)
    if not isinstance(out, Path):
        return
    for path in _inputs(args):
        if path == out or path.is_relative_to(out):
            raise ContimgError(f"the output {out} would replace the input {path}: choose "
                               "another --out", file=out)
    for name in PRODUCT_INPUTS:
        path = getattr(args, name, None)
        if isinstance(path, Path) and out.is_relative_to(path):
            raise ContimgError(f"the output {out} is inside the input {path}: choose "
                               "another --out", file=out)


def _quiet_zarr_notes() -> None:
    """zarr's notes on fixed-length strings and consolidated metadata (not in the zarr v3
    spec yet), silenced for the whole process: the block store's own scoped filters
    (``io/store/block_store.quiet_zarr_strings`` in ``warnings.catch_warnings``) are undone
    when an interrupt unwinds them while zarr's I/O thread is still writing, and its notes
    would follow the command's one line on stderr."""
    warnings.filterwarnings("ignore", message="The data type .* does not have a Zarr V3 "
                            "specification", module="zarr")
    warnings.filterwarnings("ignore", message="Consolidated metadata", module="zarr")


def _run(args: argparse.Namespace) -> int:
    config = load_config(environment=args.env, path=args.config,
                         overrides=_parse_overrides(args.set))
    configure_logging(config.logging.level, config.logging.format, config.logging.file)
    _quiet_zarr_notes()
    _check_output_apart(args)
    return args.func(args, config)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``contimg`` command; returns its exit code (cli/outcome.py). Interrupts are
    handled from here on (from before the imports when started as ``contimg``:
    cli/entry.py)."""
    return run(lambda: _run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
