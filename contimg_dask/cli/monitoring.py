"""``contimg dashboard [--host 127.0.0.1] [--port 8080]``: the pipeline dashboard with its
``/health`` and ``/metrics`` endpoints (docs/operations.md)."""

from __future__ import annotations

import argparse

from contimg_dask.config import PipelineConfig


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1..65535)")
    return port


def _cmd_dashboard(args: argparse.Namespace, config: PipelineConfig) -> int:
    from contimg_dask.archive.reader import ArchiveReader
    from contimg_dask.monitoring.server import run_dashboard
    from contimg_dask.photometry.light_curves import light_curve_reader

    dash = config.monitoring.dashboard
    run_dashboard(config, args.host or dash.host, args.port or dash.port,
                  light_curve_reader(config), ArchiveReader(config))
    return 0


def add_monitoring_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``contimg dashboard`` on the ``contimg`` parser."""
    dash = sub.add_parser("dashboard", help="serve the pipeline dashboard (Bokeh), /health and "
                          "/metrics; read-only")
    dash.add_argument("--host", help="address to bind (default: monitoring.dashboard.host, "
                      "127.0.0.1; any other needs monitoring.dashboard.access_token)")
    dash.add_argument("--port", type=_port,
                      help="TCP port (default: monitoring.dashboard.port, 8080)")
    dash.set_defaults(func=_cmd_dashboard)
