"""``contimg photometry IMAGE... --catalog CSV [--json]``, ``contimg lightcurve NAME
[--plot PNG] [--json]`` and ``contimg candidates [--json]``: forced photometry, light curves
and variability candidates (docs/photometry.md, docs/variability.md).

Measurements go to ``--out`` (default ``<paths.products>/photometry``) and are announced in
the configured state store, as the stage does; ``lightcurve`` and ``candidates`` read them.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING

from contimg_dask.cli.outcome import user_path
from contimg_dask.config import PipelineConfig
from contimg_dask.errors import ContimgError, InputError

if TYPE_CHECKING:
    from contimg_dask.photometry.tables import PhotometryTables


def _tables(args: argparse.Namespace, config: PipelineConfig) -> PhotometryTables:
    from contimg_dask.photometry.tables import PhotometryTables, photometry_root

    return PhotometryTables(user_path(args.out) if args.out else photometry_root(config))


def _version(tables: PhotometryTables, args: argparse.Namespace) -> str:
    if args.catalog_version:
        return args.catalog_version
    versions = tables.versions()
    if not versions:
        raise InputError("no photometry recorded yet (run `contimg photometry`)",
                         file=tables.root)
    return versions[0]


def _cmd_photometry(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.photometry.run import photometer_images
    from contimg_dask.science.photometry_catalog import read_photometry_catalog
    from contimg_dask.state import open_state_store

    catalog_path = args.catalog or config.photometry.catalog
    if catalog_path is None:
        raise ContimgError("give --catalog CSV (or set photometry.catalog)",
                           key="photometry.catalog")
    catalog = read_photometry_catalog(user_path(str(catalog_path)))
    tables = _tables(args, config)
    state = open_state_store(config)
    try:
        done, failed = photometer_images([user_path(i) for i in args.images], catalog,
                                         config, tables, state)
    finally:
        state.close()
    if args.json:
        print(json.dumps({"measured": [d.to_dict() for d in done],
                          "failed": [e.to_dict() for e in failed]}, indent=2))
    else:
        for d in done:
            scale = "FLAGGED: too few references" if d.flagged else f"scale {d.scale:.4f}"
            print(f"{d.epoch}: {d.measured} sources ({d.upper_limits} upper limits), "
                  f"{d.references} references, {scale}{', replaced' if d.replaced else ''}"
                  f" -> {d.table}")
            for c in d.new_candidates:
                print(f"  candidate {c['name']} ({c['kind']})")
    if failed:
        raise ContimgError(f"{len(failed)} of {len(args.images)} image(s) failed: "
                           + "; ".join(str(e) for e in failed))
    return 0


def _cmd_lightcurve(args: argparse.Namespace, config: PipelineConfig) -> int:
    tables = _tables(args, config)
    version = _version(tables, args)
    rows = tables.measurements(version, [args.name])
    if rows.empty:
        raise InputError(f"no measurements of source {args.name!r} (catalogue version "
                         f"{version})", file=tables.root)
    rows = rows.sort_values("mjd")
    columns = ["epoch", "mjd", "flux_jy", "flux_err_jy", "norm_flux_jy", "norm_err_jy",
               "upper_limit", "upper_limit_jy", "scale", "pb", "distance_deg", "flags"]
    if args.plot:
        from contimg_dask.photometry.lightcurve_plot import plot_lightcurve

        plot_lightcurve(rows, args.name, user_path(args.plot))
    if args.json:
        print(rows[columns].to_json(orient="records", indent=2))
    else:
        print(rows[columns].to_string(index=False))
    if args.plot:
        print(f"plot: {user_path(args.plot)}")
    return 0


def _cmd_candidates(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.photometry.search import current_candidates
    from contimg_dask.state import open_state_store

    tables = _tables(args, config)
    version = _version(tables, args)
    state = open_state_store(config)
    try:
        candidates = current_candidates(tables, version, config.photometry.variability, state)
    finally:
        state.close()
    if args.json:
        print(json.dumps(candidates, indent=2))
        return 0
    for c in candidates:
        m = c["metrics"]
        text = ", ".join(f"{k} {v:.3g}" for k, v in m.items() if isinstance(v, float)
                         and math.isfinite(v))
        print(f"{c['name']:<20} {c['kind']:<10} {text}")
    print(f"{len(candidates)} candidate(s), catalogue version {version}")
    return 0


def _cmd_photometry_catalog(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.photometry.catalog_build import build_catalog
    from contimg_dask.state import open_state_store

    tables = _tables(args, config)
    catalog = build_catalog(user_path(args.image), config.photometry, tables.root)
    state = open_state_store(config)
    try:
        state.emit("product", {"block_id": None, "kind": "photometry_catalog",
                               "path": str(catalog.path)})
    finally:
        state.close()
    summary = {"path": str(catalog.path), "version": catalog.version,
               "sources": len(catalog.table)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['sources']} sources -> {summary['path']} (version "
              f"{summary['version']}); use it with --catalog or photometry.catalog")
    return 0


def add_photometry_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``photometry``, ``lightcurve`` and ``candidates`` on the ``contimg``
    parser."""
    out_help = "photometry tables root (default: <paths.products>/photometry)"
    p = sub.add_parser("photometry", help="forced photometry of images at a catalogue's "
                       "positions (normalised, recorded in the light curves)")
    p.add_argument("images", nargs="+", help="FITS images (PB-corrected, with BMAJ/BMIN)")
    p.add_argument("--catalog", help="catalogue CSV: name, ra_deg, dec_deg, flux_jy "
                   "[, major_arcsec, minor_arcsec, pa_deg] (default: photometry.catalog)")
    p.add_argument("--out", help=out_help)
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=_cmd_photometry)
    pc = sub.add_parser("photometry-catalog", help="build a reference catalogue from a deep "
                        "image or mosaic (photutils segmentation)")
    pc.add_argument("image", help="deep FITS image or mosaic (with BMAJ/BMIN)")
    pc.add_argument("--out", help=out_help + "; the catalogue goes to <out>/catalogs/")
    pc.add_argument("--json", action="store_true", help="print path, version, count as JSON")
    pc.set_defaults(func=_cmd_photometry_catalog)
    lc = sub.add_parser("lightcurve", help="a source's light curve (raw and normalised)")
    lc.add_argument("name", help="catalogue name of the source")
    lc.add_argument("--plot", nargs="?", const="lightcurve.png", default=None,
                    metavar="PNG", help="draw it (default file: lightcurve.png)")
    lc.add_argument("--catalog-version", help="catalogue version (default: the newest)")
    lc.add_argument("--out", help=out_help)
    lc.add_argument("--json", action="store_true", help="print the rows as JSON")
    lc.set_defaults(func=_cmd_lightcurve)
    ca = sub.add_parser("candidates", help="variability candidates (η/V, two-epoch, ESE)")
    ca.add_argument("--catalog-version", help="catalogue version (default: the newest)")
    ca.add_argument("--out", help=out_help)
    ca.add_argument("--json", action="store_true",
                    help="print a JSON list (name, kind, metrics)")
    ca.set_defaults(func=_cmd_candidates)
