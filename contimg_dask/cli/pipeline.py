"""``contimg run INCOMING``, ``contimg failures``, ``contimg retry``: the orchestrator's
batch commands (docs/operations.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from contimg_dask.cli.options import utc_time
from contimg_dask.cli.outcome import user_path
from contimg_dask.config import PipelineConfig
from contimg_dask.errors import ContimgError


class _ProgressDisplay:
    """Blocks done/total, the stage running, rate and ETA (rich), on standard error."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]blocks"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("{task.description}"),
            console=Console(stderr=True), disable=not enabled, transient=False)
        self.task = None
        self.t0 = time.monotonic()

    def __enter__(self) -> _ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, done: int, total: int, stage: str | None) -> None:
        if self.task is None:
            self.task = self.progress.add_task("", total=total, rate="")
        hours = (time.monotonic() - self.t0) / 3600
        rate = f"{done / hours:.0f} blocks/h" if done and hours > 0 else ""
        self.progress.update(self.task, completed=done, total=total, rate=rate,
                             description=stage or "")


def _cmd_run(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.pipeline import Pipeline
    from contimg_dask.pipeline.batch import run_directory
    from contimg_dask.pipeline.cluster import dask_client

    incoming = Path(args.incoming)
    if not incoming.is_dir():
        raise ContimgError("not a directory", file=incoming)
    show = not args.json and not args.no_progress and sys.stderr.isatty()
    with dask_client(config.dask) as client, Pipeline(config, client=client) as pipeline, \
            _ProgressDisplay(show) as display:
        outcomes = run_directory(pipeline, incoming, args.start, args.end, display.update)
    if args.json:
        for outcome in outcomes:
            print(json.dumps(outcome.to_dict()))
    else:
        for o in outcomes:
            latency = f", {o.latency_s:.0f} s" if o.latency_s is not None else ""
            print(f"{o.block_id}  {o.outcome:<7} {o.kind or '-':<10} "
                  f"{len(o.products)} products{latency}")
            for error in o.errors:
                print(f"    {error.get('stage', '-')}: {error.get('error')}: "
                      f"{error.get('message')}" + (f" [{error['input']}]"
                                                   if error.get("input") else ""))
        done = sum(o.outcome == "done" for o in outcomes)
        print(f"{done} of {len(outcomes)} blocks done; `contimg failures` for the causes")
    return 0 if all(o.outcome == "done" for o in outcomes) else 1


def _cmd_failures(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.pipeline.failures import summarise
    from contimg_dask.state import open_state_store

    store = open_state_store(config)
    try:
        summary = summarise(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['failures']} failures recorded; "
          f"{len(summary['dead_letters'])} stages dead-lettered")
    for title, key in (("by stage", "by_stage"), ("by cause", "by_cause")):
        print(f"{title}:")
        for name, count in summary[key].items():
            print(f"  {count:>5}  {name}")
    print("by file:")
    for path, messages in summary["by_file"].items():
        print(f"  {path}\n" + "".join(f"      {m}\n" for m in messages), end="")
    if summary["dead_letters"]:
        print("dead letters (`contimg retry BLOCK` or `--all-transient` to requeue):")
    for d in summary["dead_letters"]:
        kind = "transient" if d["transient"] else "permanent"
        print(f"  {d['block_id']}  {d['stage']}  {d['error']} ({kind}, {d['attempts']} "
              f"attempts): {d['message']}" + (f" [{d['input']}]" if d["input"] else ""))
    return 0


def _cmd_retry(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.pipeline.failures import requeue
    from contimg_dask.state import open_state_store

    if bool(args.block) == bool(args.all_transient):
        raise ContimgError("give a BLOCK or --all-transient (one of them)")
    store = open_state_store(config)
    try:
        requeued = requeue(store, args.block, transient_only=args.all_transient)
    finally:
        store.close()
    for block_id, stage in requeued:
        print(f"requeued {block_id} {stage}")
    print(f"{len(requeued)} stages requeued; `contimg run` or `contimg watch` processes them")
    return 0


def add_pipeline_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``contimg run``, ``contimg failures`` and ``contimg retry``."""
    run = sub.add_parser("run", help="process every block of a directory in observation "
                         "order, then exit (batch)")
    run.add_argument("incoming", type=user_path, help="directory of subband files")
    run.add_argument("--from", dest="start", type=utc_time,
                     help="only blocks observed at or after this UTC time")
    run.add_argument("--to", dest="end", type=utc_time,
                     help="only blocks observed before this UTC time")
    run.add_argument("--json", action="store_true",
                     help="one JSON object per block: outcome, products (kind, path), errors")
    run.add_argument("--no-progress", action="store_true", help="no progress display")
    run.set_defaults(func=_cmd_run)
    failures = sub.add_parser("failures", help="failures by stage, cause and file; the "
                              "dead-lettered stages")
    failures.add_argument("--json", action="store_true", help="JSON output")
    failures.set_defaults(func=_cmd_failures)
    retry = sub.add_parser("retry", help="requeue a block's dead-lettered stages, or every "
                           "transiently failed one")
    retry.add_argument("block", nargs="?", help="block id (YYYY-MM-DDTHH:MM:SS)")
    retry.add_argument("--all-transient", action="store_true",
                       help="every dead-lettered stage whose last failure was transient")
    retry.set_defaults(func=_cmd_retry)
