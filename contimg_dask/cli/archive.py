"""``contimg archive ...`` (sync, search, collections, get, config, monitor, retention) and
``contimg reproduce``: the products archive (docs/archive.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from contimg_dask.cli.options import (
    add_overwrite_option,
    declination_deg,
    unix_or_none,
    utc_time,
)
from contimg_dask.cli.outcome import user_path
from contimg_dask.config import PipelineConfig
from contimg_dask.errors import ContimgError


def _entry(config: PipelineConfig, product: str) -> Any:
    from contimg_dask.archive.index import open_archive_index

    index = open_archive_index(config)
    try:
        entry = index.get(product)
    finally:
        index.close()
    if entry is None:
        raise ContimgError(f"no product {product!r} in the archive (`contimg archive search` "
                           "lists them; `contimg archive sync` indexes new ones)")
    return entry


def _cmd_sync(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.archive.catalogue import sync_index
    from contimg_dask.archive.index import open_archive_index
    from contimg_dask.state import open_state_store

    state, index = open_state_store(config), open_archive_index(config)
    try:
        report = sync_index(state, index, config)
    finally:
        index.close()
        state.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"indexed {report['indexed']}, unchanged {report['unchanged']}, skipped "
              f"{len(report['skipped'])}; {report['total']} products in the archive")
        for skipped in report["skipped"]:
            print(f"  skipped {skipped['product_id']}: {skipped['reason']}")
    return 0


def _cmd_search(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.archive.catalogue import search_page

    try:
        page = search_page(config, cone=tuple(args.cone) if args.cone else None,
                           time_from=unix_or_none(args.time_from),
                           time_to=unix_or_none(args.time_to),
                           strip_dec_deg=args.strip, kind=args.kind,
                           max_noise_jy=args.max_noise, limit=args.limit, offset=args.offset)
    except ValueError as exc:
        raise ContimgError(str(exc)) from None
    found = page["products"]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print(f"{'PRODUCT':<36}{'KIND':<13}{'RA':>9}{'DEC':>9}{'STRIP':>7}  {'START (UTC)':<20}"
          f"{'NOISE mJy':>10}")
    for e in found:
        start = dt.datetime.fromtimestamp(e["time_start"], dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        noise = "-" if e["noise_jy"] is None else f"{1e3 * e['noise_jy']:.3f}"
        print(f"{e['product_id']:<36}{e['kind']:<13}{e['ra_deg']:9.4f}{e['dec_deg']:9.4f}"
              f"{e['strip_dec_deg']:7.1f}  {start:<20}{noise:>10}")
    shown = (f"{page['offset'] + 1}-{page['offset'] + len(found)} of " if found
             and len(found) < page["total"] else "")
    print(f"{shown}{page['total']} products")
    return 0


def _cmd_collections(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.archive.index import open_archive_index

    index = open_archive_index(config)
    try:
        counts = index.collections()
    finally:
        index.close()
    if args.json:
        print(json.dumps(counts, indent=2))
    else:
        for collection, n in counts.items():
            print(f"{n:8d}  {collection}")
    return 0


def _cmd_get(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.archive.conversions import get_product

    result = get_product(_entry(config, args.product), args.format, config, out=args.out,
                         overwrite=args.overwrite)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['path']}  ({result['cache']}, {result['seconds']:.2f} s)")
    return 0


def _cmd_monitor(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.archive.monitor import default_metric_names, monitor_points, write_points
    from contimg_dask.stages.registry import STAGES
    from contimg_dask.state import open_state_store

    names = args.metric or default_metric_names(list(STAGES))
    state = open_state_store(config)
    try:
        points = monitor_points(state, names, args.rate, unix_or_none(args.time_from),
                                unix_or_none(args.time_to))
    finally:
        state.close()
    write_points(points, args.out, args.format, overwrite=args.overwrite)
    print(f"{len(points)} {args.rate} points of {len(names)} monitor points -> {args.out}")
    return 0


def _cmd_retention(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.archive import retention
    from contimg_dask.archive.index import open_archive_index
    from contimg_dask.state import open_state_store

    state, index = open_state_store(config), open_archive_index(config)
    try:
        decisions = retention.plan(state, index, config.archive.retention)
        deleted = retention.apply(decisions, state) if args.apply else []
    finally:
        index.close()
        state.close()
    if args.json:
        print(json.dumps({"applied": args.apply, "decisions": [d.to_dict() for d in decisions],
                          "deleted": deleted}, indent=2))
        return 0
    for d in decisions:
        print(f"{d.action:<7}{d.rule:<14}{d.path}  ({d.reason})")
    verb = "deleted" if args.apply else "would delete (dry run; --apply deletes)"
    print(f"{verb}: {sum(d.action == 'delete' for d in decisions)}, kept: "
          f"{sum(d.action == 'keep' for d in decisions)}")
    return 0


def _recorded_config(config: PipelineConfig, provenance: dict[str, Any]
                     ) -> dict[str, Any] | None:
    """The configuration recorded under the provenance's hash (None if none was)."""
    from contimg_dask.state import open_state_store

    if not provenance.get("config_hash"):
        return None
    state = open_state_store(config)
    try:
        return state.configuration(provenance["config_hash"])
    finally:
        state.close()


def _cmd_config(args: argparse.Namespace, config: PipelineConfig) -> int:
    """The configuration a product was made with (by product id or configuration hash)."""
    import yaml

    provenance = ({"config_hash": args.product} if "/" not in args.product
                  else _entry(config, args.product).provenance)
    recorded = _recorded_config(config, provenance)
    if recorded is None:
        raise ContimgError(f"no configuration recorded for {args.product!r} (hash "
                           f"{provenance.get('config_hash') or 'none'}): products recorded "
                           "before configurations were kept have only the hash")
    if args.json:
        print(json.dumps(recorded, indent=2))
    else:
        print(yaml.safe_dump(recorded, sort_keys=False), end="")
    return 0


def _cmd_reproduce(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.archive.reproduce import reproduce
    from contimg_dask.stages.layout import block_slug, products_dir

    entry = _entry(config, args.product)
    dest = args.out or (products_dir(config) / "reproduced" / block_slug(
        entry.product_id.replace("/", "_")) / time.strftime("%Y%m%dT%H%M%S"))
    report = reproduce(entry, config, Path(dest),
                       recorded_config=_recorded_config(config, entry.provenance))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        how = ("bit-identical" if report["identical"] else
               f"within {report['tolerance']:.3g}" if report["agrees"] else "DIFFERENT")
        print(f"{report['product_id']}: {how} ({report['arrays_compared']} arrays) -> "
              f"{report['reproduced']}")
        if report["config_used"] != "recorded":
            print("  note: no configuration recorded with the product: ran with the current "
                  "one")
        if not report["config_matches"]:
            print("  note: the configuration differs from the one recorded")
        for path, what in report["changed_inputs"].items():
            print(f"  note: input {path} {what} since the product was made")
    return 0 if report["agrees"] else 1


def _time_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--from", dest="time_from", type=utc_time, required=required,
                        help="start, ISO 8601 UTC")
    parser.add_argument("--to", dest="time_to", type=utc_time, required=required,
                        help="end, ISO 8601 UTC")


def add_archive_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``contimg archive ...`` and ``contimg reproduce`` on the parser."""
    from contimg_dask.archive.conversions import FORMATS

    arc = sub.add_parser("archive", help="the products archive: search, get, monitor data, "
                         "retention").add_subparsers(dest="archive_command", required=True)
    sync = arc.add_parser("sync", help="index the products the state store recorded")
    sync.add_argument("--json", action="store_true", help="JSON report")
    sync.set_defaults(func=_cmd_sync)

    srch = arc.add_parser("search", help="search products by position, time, strip, kind, "
                          "noise")
    srch.add_argument("--cone", nargs=3, type=float, metavar=("RA", "DEC", "RADIUS"),
                      help="ICRS degrees: products whose centre lies within RADIUS")
    _time_options(srch)
    srch.add_argument("--strip", type=declination_deg, help="survey strip declination, deg")
    srch.add_argument("--kind", help="product kind (block_store, ms, solutions, image, ...)")
    srch.add_argument("--max-noise", type=float, help="largest image noise, Jy/beam")
    srch.add_argument("--limit", type=int, help="at most this many, oldest first")
    srch.add_argument("--offset", type=int, default=0,
                      help="skip this many first (pages: --offset 100 --limit 100)")
    srch.add_argument("--json", action="store_true", help="JSON output")
    srch.set_defaults(func=_cmd_search)

    coll = arc.add_parser("collections", help="products per collection (strip/day/block, "
                          "products/<kind>/...)")
    coll.add_argument("--json", action="store_true", help="JSON output")
    coll.set_defaults(func=_cmd_collections)

    get = arc.add_parser("get", help="a product in a format, converted on the fly and cached")
    get.add_argument("product", help="product id, e.g. 2026-01-15T12:00:00/block_store")
    get.add_argument("--format", required=True, choices=FORMATS)
    get.add_argument("--out", type=user_path, help="copy it here (default: print the cached "
                     "path)")
    add_overwrite_option(get)
    get.add_argument("--json", action="store_true", help="JSON output")
    get.set_defaults(func=_cmd_get)

    cfg = arc.add_parser("config", help="the configuration a product was made with (as "
                         "recorded with it)")
    cfg.add_argument("product", help="product id, or a configuration hash")
    cfg.add_argument("--json", action="store_true", help="JSON (default: YAML)")
    cfg.set_defaults(func=_cmd_config)

    mon = arc.add_parser("monitor", help="export monitor data (metrics) as CSV or Parquet")
    _time_options(mon)
    mon.add_argument("--rate", required=True, choices=["raw", "minute", "block"])
    mon.add_argument("--format", required=True, choices=["csv", "parquet"])
    mon.add_argument("--out", required=True, type=user_path, help="output file")
    mon.add_argument("--metric", action="append", help="monitor point (repeat; default: the "
                     "pipeline's standard points)")
    add_overwrite_option(mon)
    mon.set_defaults(func=_cmd_monitor)

    ret = arc.add_parser("retention", help="apply the retention policies (archive.retention); "
                         "a dry run unless --apply")
    ret.add_argument("--apply", action="store_true", help="delete (default: only show)")
    ret.add_argument("--json", action="store_true", help="JSON output")
    ret.set_defaults(func=_cmd_retention)

    rep = sub.add_parser("reproduce", help="re-run a product's recorded command into a new "
                         "location and compare")
    rep.add_argument("product", help="product id")
    rep.add_argument("--out", type=user_path, help="where (default: "
                     "<paths.products>/reproduced/<product>/<time>)")
    rep.add_argument("--json", action="store_true", help="JSON report")
    rep.set_defaults(func=_cmd_reproduce)
