"""Health checks: each part of the system green, amber or red, with the reason.

- ``state``: the state store answers (its schema version and status summary);
- ``products_disk``: the free fraction the ``disk_free_fraction`` alert rules watch (the
  fuller of the stores' and products' file systems) against those rules' thresholds, the
  one configuration of it: red below a ``critical`` rule's (``disk_low``), amber below a
  ``warning`` rule's, so the line is red exactly when ``disk_low`` is raised (a rule's
  ``for_s`` aside: the line is the value now);
- ``dask_scheduler``: ``dask.scheduler_address`` accepts a TCP connection (green with "local
  cluster" when none is configured: the pipeline starts its own);
- ``casa``: the latest ``breaker`` event of ``monitoring.health.casa_breaker`` (closed green,
  half_open amber, open red); ``dask`` the same for the Dask cluster's breaker (open while
  the scheduler or the workers are lost);
- one line per ``monitoring.health.processes`` (watcher, pipeline): the age of its newest
  ``heartbeat.<name>`` sample against ``heartbeat_amber_s``/``heartbeat_red_s``;
- ``dask_workers``: the newest ``heartbeat.dask_workers`` sample (the number of workers the
  scheduler reported to ``contimg watch``) and ``dask_worker_memory_fraction`` (the fullest
  worker): red with no report within ``heartbeat_red_s`` or no worker, amber when the report
  is older than ``heartbeat_amber_s`` or a worker is above ``dask_memory_amber`` of its
  memory limit.

The whole is red if any check is red (``/health`` answers 503), else amber if any is amber.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from contimg_dask.config import PipelineConfig
from contimg_dask.config.schema import AlertRuleConfig
from contimg_dask.errors import StateError
from contimg_dask.monitoring.event_tail import EventTail
from contimg_dask.monitoring.signals import pipeline_disk_free_fraction
from contimg_dask.state import StateStore

GREEN, AMBER, RED = "green", "amber", "red"
#: The Dask cluster's circuit breaker (``pipeline.dependencies``' ``dask``).
DASK_BREAKER = "dask"
_RANK = {GREEN: 0, AMBER: 1, RED: 2}
#: A disk alert rule's severity as the health line's status.
_SEVERITY_STATUS = {"critical": RED, "warning": AMBER, "info": GREEN}
DISK_METRIC = "disk_free_fraction"


@dataclass(frozen=True)
class Check:
    """One health line."""

    name: str
    status: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def worst(checks: list[Check]) -> str:
    """The overall status: the worst of the checks (green when there are none)."""
    return max((c.status for c in checks), key=_RANK.__getitem__, default=GREEN)


def check_state(store: StateStore) -> tuple[Check, dict[str, Any] | None]:
    """The state store's check and, when it answered, its ``status()`` summary."""
    try:
        status = store.status()
    except StateError as exc:
        return Check("state", RED, f"{store.backend} at {store.location}: {exc.message}"), None
    return Check("state", GREEN, f"{store.backend} at {store.location}, schema "
                 f"{status['schema']}"), status


def disk_rules(config: PipelineConfig) -> list[AlertRuleConfig]:
    """The alert rules on ``disk_free_fraction`` (all ``below``: the schema checks it)."""
    return [rule for rule in config.monitoring.alerts if rule.metric == DISK_METRIC]


def check_disk(config: PipelineConfig) -> Check:
    paths = config.paths.resolved()
    free = pipeline_disk_free_fraction(paths)
    reason = f"{100 * free:.1f} % free at {paths.stores} and {paths.products}"
    crossed = [rule for rule in disk_rules(config) if free < rule.threshold]
    if not crossed:
        return Check("products_disk", GREEN, reason)
    rule = max(crossed, key=lambda r: _RANK[_SEVERITY_STATUS[r.severity]])
    return Check("products_disk", _SEVERITY_STATUS[rule.severity],
                 f"{reason}: below {rule.name}'s {100 * rule.threshold:g} %")


def check_scheduler(config: PipelineConfig) -> Check:
    address = config.dask.scheduler_address
    if not address:
        return Check("dask_scheduler", GREEN, "local cluster (started by the pipeline)")
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        with socket.create_connection((parts.hostname, parts.port or 8786),
                                      timeout=config.monitoring.health.scheduler_timeout_s):
            pass
    except OSError as exc:
        return Check("dask_scheduler", RED, f"{address} unreachable: {exc}")
    return Check("dask_scheduler", GREEN, f"{address} accepts connections")


def check_breaker(tail: EventTail, name: str) -> Check:
    breaker = tail.breakers.get(name)
    if breaker is None:
        return Check(name, GREEN, "breaker closed (no breaker event yet)")
    state = breaker["state"]
    status = {"closed": GREEN, "half_open": AMBER}.get(state, RED)
    return Check(name, status, f"breaker {state} since {breaker['at']:.0f} (Unix s)")


def breaker_lines(config: PipelineConfig) -> list[str]:
    """The breakers with a health line: CASA's (``monitoring.health.casa_breaker``) and the
    Dask cluster's (``dask``: open while the scheduler or the workers are lost)."""
    return [config.monitoring.health.casa_breaker, DASK_BREAKER]


def _latest(store: StateStore, name: str, since: float) -> tuple[float, float] | None:
    """(time, value) of the newest sample of ``name`` since ``since``, if any."""
    points = store.metric_series(name, "raw", since=since)
    return (float(points[-1].key), points[-1].mean) if points else None


def check_heartbeat(store: StateStore, process: str, config: PipelineConfig,
                    now: float) -> Check:
    limits = config.monitoring.health
    beat = _latest(store, f"heartbeat.{process}", now - limits.heartbeat_red_s)
    if beat is None:
        return Check(process, RED, f"no heartbeat in the last {limits.heartbeat_red_s:.0f} s")
    age = now - beat[0]
    status = GREEN if age <= limits.heartbeat_amber_s else AMBER
    return Check(process, status, f"last heartbeat {age:.0f} s ago")


def check_dask_workers(store: StateStore, config: PipelineConfig, now: float) -> Check:
    limits = config.monitoring.health
    report = _latest(store, "heartbeat.dask_workers", now - limits.heartbeat_red_s)
    if report is None:
        return Check("dask_workers", RED, "no report from the Dask scheduler in the last "
                     f"{limits.heartbeat_red_s:.0f} s")
    at, n_workers = report
    age = now - at
    memory = _latest(store, "dask_worker_memory_fraction", at - 1.0)
    memory_text = "" if memory is None else f", fullest at {100 * memory[1]:.0f} % of its memory"
    reason = f"{n_workers:.0f} workers{memory_text}, reported {age:.0f} s ago"
    if n_workers < 1:
        return Check("dask_workers", RED, reason)
    if age > limits.heartbeat_amber_s or (memory is not None
                                          and memory[1] > limits.dask_memory_amber):
        return Check("dask_workers", AMBER, reason)
    return Check("dask_workers", GREEN, reason)


def run_checks(store: StateStore, tail: EventTail | None, config: PipelineConfig,
               now: float) -> tuple[list[Check], dict[str, Any] | None]:
    """All checks at ``now``; with them the state store's status summary (None if down).
    ``tail`` must have been updated by the caller (None: the store is down)."""
    state, status = check_state(store)
    checks = [state, check_disk(config), check_scheduler(config)]
    if status is None or tail is None:
        why = "unknown: the state store is down"
        checks += [Check(name, AMBER, why) for name in breaker_lines(config)]
        checks += [Check(p, AMBER, why) for p in config.monitoring.health.processes]
        checks.append(Check("dask_workers", AMBER, why))
        return checks, None
    checks += [check_breaker(tail, name) for name in breaker_lines(config)]
    checks += [check_heartbeat(store, p, config, now) for p in config.monitoring.health.processes]
    checks.append(check_dask_workers(store, config, now))
    return checks, status
