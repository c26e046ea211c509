"""Signals the alert evaluator derives and records as metric samples, so that rules treat
them like any other series (docs/alerts.md lists them):

- ``failure_fraction``: failed stage runs / all stage runs ended in the last
  ``monitoring.failure_window_s`` (from ``stage_done``/``stage_failed`` events);
- ``breakers_open``: how many circuit breakers are open (latest ``breaker`` event of each);
- ``calibration_age_s``: seconds since calibration solutions were last made (the last
  ``stage_done`` of ``calibrate_solve`` or ``product`` of kind ``solutions``);
- ``disk_free_fraction``: free fraction of the fuller of the file systems holding
  ``paths.stores`` and ``paths.products`` (:func:`pipeline_disk_free_fraction`: the same
  fraction the orchestrator records before each writing stage and the ``products_disk``
  health line shows).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from contimg_dask.config.schema import PathsConfig
from contimg_dask.monitoring.event_tail import EventTail
from contimg_dask.state import MetricSample


def disk_free_fraction(path: Path) -> float:
    """Free fraction (0..1) of the file system holding ``path`` (or its nearest existing
    parent: the products directory may not exist yet)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    usage = shutil.disk_usage(path)
    return usage.free / usage.total


def pipeline_disk_free_fraction(paths: PathsConfig) -> float:
    """The lowest free fraction (0..1) of the file systems holding ``paths.stores`` and
    ``paths.products`` (the pipeline writes to both)."""
    return min(disk_free_fraction(paths.stores), disk_free_fraction(paths.products))


def derived_samples(tail: EventTail, paths: PathsConfig, failure_window_s: float,
                    now: float) -> list[MetricSample]:
    """The derived signals at ``now`` (``tail`` already updated)."""
    samples = [MetricSample("breakers_open", float(len(tail.open_breakers())), now),
               MetricSample("disk_free_fraction", pipeline_disk_free_fraction(paths), now)]
    failures = tail.failure_fraction(now, failure_window_s)
    if failures is not None:
        samples.append(MetricSample("failure_fraction", failures, now))
    if tail.last_calibration_at is not None:
        samples.append(MetricSample("calibration_age_s", now - tail.last_calibration_at, now))
    return samples
