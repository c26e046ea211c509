"""Durable pipeline state: the StateStore protocol and its SQLite (embedded, one machine)
and Redis (shared, a cluster) implementations, chosen by ``state.backend``. See
docs/state.md."""

from __future__ import annotations

from pathlib import Path

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.state.protocol import StateStore
from contimg_dask.state.records import (
    Event,
    FailureRecord,
    Lease,
    MetricPoint,
    MetricSample,
    Solutions,
    StageStatus,
)

__all__ = ["Event", "FailureRecord", "Lease", "MetricPoint", "MetricSample", "Solutions",
           "StageStatus", "StateStore", "open_state_store", "sqlite_path"]


def sqlite_path(config: PipelineConfig) -> Path:
    """The SQLite database file: ``state.url`` (``sqlite:///PATH``) or
    ``<paths.state>/state.sqlite``."""
    url = config.state.url
    if url:
        return Path(url.removeprefix("sqlite:///")).expanduser()
    return config.paths.state / "state.sqlite"


def open_state_store(config: PipelineConfig, *, migrate: bool = False) -> StateStore:
    """The configured state store. An older schema is refused unless ``migrate`` (then it
    is brought up to date); a newer one always is."""
    if config.state.backend == "redis":
        from contimg_dask.state.redis_store import RedisStateStore

        return RedisStateStore(config.state, migrate=migrate)
    from contimg_dask.state.sqlite_store import SqliteStateStore

    return SqliteStateStore(sqlite_path(config), config.state, migrate=migrate)
