"""``contimg state status|failures|events|prune|migrate|export|import|redis-conf``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from contimg_dask.config import PipelineConfig
from contimg_dask.errors import ContimgError


def _open(config: PipelineConfig, *, migrate: bool = False):
    from contimg_dask.state import open_state_store

    return open_state_store(config, migrate=migrate)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cmd_status(args: argparse.Namespace, config: PipelineConfig) -> int:
    store = _open(config)
    try:
        status = store.status()
    finally:
        store.close()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"{status['backend']} state at {status['location']} (schema {status['schema']})")
    print("blocks: " + (", ".join(f"{n} {s}" for s, n in status["blocks"].items()) or "none"))
    print(f"backlog: {status['backlog']} pending stages; {len(status['leases'])} leases "
          f"({status['expired_leases']} expired); {status['recent_failures']} failures kept")
    for stage, counts in status["stages"].items():
        print(f"  {stage:<14}" + "  ".join(f"{s} {n}" for s, n in counts.items()))
    for lease in status["leases"]:
        print(f"  lease {lease['block_id']} {lease['stage']} -> {lease['worker']} "
              f"(token {lease['token']}, attempt {lease['attempt']}, "
              f"{lease['expires_in_s']:.0f} s left)")
    return 0


def _cmd_failures(args: argparse.Namespace, config: PipelineConfig) -> int:
    store = _open(config)
    try:
        failures = store.failures(limit=args.limit, block_id=args.block)
    finally:
        store.close()
    if args.json:
        print(json.dumps([f.to_dict() for f in failures], indent=2))
        return 0
    for f in failures:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(f.at))
        kind = "transient" if f.transient else "permanent"
        print(f"{when}  {f.block_id or '-'}  {f.stage or '-'}  {f.error} ({kind})  "
              f"{f.message}" + (f"  [{f.input}]" if f.input else ""))
    return 0


def _cmd_events(args: argparse.Namespace, config: PipelineConfig) -> int:
    store = _open(config)
    after = args.after
    try:
        while True:
            for event in store.events(after=after, count=args.count):
                after = event.id
                print(json.dumps(event.to_dict()) if args.json else
                      f"{event.id}  {time.strftime('%H:%M:%S', time.gmtime(event.at))}  "
                      f"{event.kind}  {json.dumps(event.data)}", flush=True)
            if not args.follow:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        store.close()


def _cmd_prune(args: argparse.Namespace, config: PipelineConfig) -> int:
    store = _open(config)
    try:
        removed = store.prune()
    finally:
        store.close()
    print("removed " + ", ".join(f"{n} {what}" for what, n in removed.items()) +
          " (state.retention)")
    return 0


def _cmd_migrate(args: argparse.Namespace, config: PipelineConfig) -> int:
    store = _open(config, migrate=True)
    print(f"{store.backend} state at {store.location}: schema {store.schema_version()}")
    store.close()
    return 0


def _cmd_export(args: argparse.Namespace, config: PipelineConfig) -> int:
    store = _open(config)
    try:
        dump = store.export()
    finally:
        store.close()
    text = json.dumps(dump)
    if args.out == "-":
        sys.stdout.write(text + "\n")
    else:
        _write_atomically(Path(args.out), text)
        print(f"exported {len(dump['blocks'])} blocks, {len(dump['stages'])} stages, "
              f"{len(dump['events'])} events to {args.out}")
    return 0


def _cmd_import(args: argparse.Namespace, config: PipelineConfig) -> int:
    path = Path(args.dump)
    try:
        dump = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ContimgError(f"cannot read the state dump: {exc}", file=path) from exc
    store = _open(config)
    try:
        store.import_dump(dump)
        print(f"imported {len(dump['blocks'])} blocks, {len(dump['stages'])} stages into "
              f"{store.backend} state at {store.location}")
    finally:
        store.close()
    return 0


def _cmd_redis_conf(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.state.redis_server import render_redis_conf

    data_dir = config.state.redis.data_dir or config.paths.state / "redis"
    text = render_redis_conf(config.state.redis, data_dir)
    if args.out:
        _write_atomically(Path(args.out), text)
        print(args.out)
    else:
        print(text, end="")
    return 0


def add_state_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``contimg state ...`` on the ``contimg`` parser."""
    state = sub.add_parser("state", help="the pipeline's state store (SQLite or Redis)")
    steps = state.add_subparsers(dest="step", required=True)
    status = steps.add_parser("status", help="blocks by status, stages, leases, backlog")
    status.add_argument("--json", action="store_true", help="JSON output")
    status.set_defaults(func=_cmd_status)
    failures = steps.add_parser("failures", help="recent classified failures, newest last")
    failures.add_argument("--limit", type=int, default=50)
    failures.add_argument("--block", help="only this block")
    failures.add_argument("--json", action="store_true", help="JSON output")
    failures.set_defaults(func=_cmd_failures)
    events = steps.add_parser("events", help="the event log")
    events.add_argument("--follow", action="store_true", help="keep printing new events")
    events.add_argument("--after", help="start after this event id")
    events.add_argument("--count", type=int, default=100, help="events per read")
    events.add_argument("--interval", type=float, default=1.0,
                        help="seconds between reads with --follow")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(func=_cmd_events)
    prune = steps.add_parser("prune", help="drop metrics and events past state.retention")
    prune.set_defaults(func=_cmd_prune)
    migrate = steps.add_parser("migrate", help="bring the store's schema up to date")
    migrate.set_defaults(func=_cmd_migrate)
    export = steps.add_parser("export", help="the whole state as JSON (seeds either backend)")
    export.add_argument("out", help="output file, or - for standard output")
    export.set_defaults(func=_cmd_export)
    imp = steps.add_parser("import", help="seed an empty store from `contimg state export`")
    imp.add_argument("dump", help="JSON file written by `contimg state export`")
    imp.set_defaults(func=_cmd_import)
    conf = steps.add_parser("redis-conf", help="the redis.conf the Redis backend needs")
    conf.add_argument("--out", help="write it here (default: standard output)")
    conf.set_defaults(func=_cmd_redis_conf)
