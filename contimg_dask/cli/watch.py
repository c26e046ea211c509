"""``contimg watch [INCOMING]``: streaming, started by an operator or a service manager
(docs/operations.md). SIGTERM or SIGINT: finish the stage in hand, record it, exit 0; a
second signal: stop at once (exit 130; the stage's lease expires and it runs again)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

from contimg_dask.cli.outcome import user_path
from contimg_dask.config import PipelineConfig
from contimg_dask.logs import get_logger

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _cmd_watch(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.archive.reader import ArchiveReader
    from contimg_dask.errors import InputError
    from contimg_dask.monitoring.server import DashboardThread
    from contimg_dask.photometry.light_curves import light_curve_reader
    from contimg_dask.pipeline import Pipeline
    from contimg_dask.pipeline.cluster import dask_client
    from contimg_dask.pipeline.streaming import Streaming

    incoming = Path(args.incoming) if args.incoming else config.paths.resolved().incoming
    if not incoming.is_dir():
        raise InputError("the incoming directory does not exist", file=incoming)
    stop_requested = threading.Event()
    running: list[Streaming] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop_requested.is_set():
            raise KeyboardInterrupt(f"second {name}")
        stop_requested.set()
        log.warning("%s: finishing the stage in hand, then stopping", name)
        print(f"contimg watch: {name}: finishing the stage in hand, then stopping "
              "(again to stop at once)", flush=True)
        for streaming in running:
            streaming.stop()

    # Installed before the cluster starts: a service stopped while starting exits 0 too.
    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    dashboard = None
    try:
        if args.dashboard:
            settings = config.monitoring.dashboard
            dashboard = DashboardThread(config, settings.host, settings.port,
                                        light_curve_reader(config),
                                        ArchiveReader(config)).start()
            print(f"contimg watch: pipeline dashboard on http://{settings.host}:{settings.port}/",
                  flush=True)
        with dask_client(config.dask) as client, Pipeline(config, client=client) as pipeline:
            streaming = Streaming(pipeline, incoming)
            running.append(streaming)
            if not stop_requested.is_set():
                print(f"contimg watch: watching {incoming} (state: {pipeline.state.backend} "
                      f"{pipeline.state.location}; Dask dashboard {client.dashboard_link})",
                      flush=True)
                streaming.run()
    finally:
        if dashboard is not None:
            dashboard.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("contimg watch: stopped", flush=True)
    return 0


def add_watch_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``contimg watch`` on the ``contimg`` parser."""
    watch = sub.add_parser(
        "watch", help="streaming: watch the incoming directory, seal blocks as their subbands "
        "arrive and process them (until SIGTERM/SIGINT)")
    watch.add_argument("incoming", nargs="?", type=user_path,
                       help="incoming directory (default: paths.incoming)")
    watch.add_argument("--dashboard", action="store_true",
                       help="also serve the pipeline dashboard (monitoring.dashboard host and "
                       "port) from this process")
    watch.set_defaults(func=_cmd_watch)
