"""``/metrics``: the monitoring snapshot in the Prometheus text format, through
prometheus_client (a custom collector over the latest :class:`Snapshot`; no state store read
per scrape). The names are listed in docs/operations.md; :data:`METRIC_NAMES` is that list.

:class:`MetricsText` renders a snapshot's families once (one ``generate_latest``) and serves
that text to every scrape until the next snapshot; only the snapshot's age, which grows
between snapshots, is written per scrape.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from contimg_dask.monitoring.health import AMBER, GREEN, RED
from contimg_dask.monitoring.snapshot import STAGES, Snapshot

#: Latest value of these metric series, exported as ``contimg_<name>``.
LATEST = {"block_latency_s": "block_latency_seconds", "backlog_blocks": "backlog_blocks",
          "flag_fraction": "flag_fraction", "calibration_snr": "calibration_snr",
          "image_noise_jy": "image_noise_jy", "image_dynamic_range": "image_dynamic_range",
          "disk_free_fraction": "disk_free_fraction", "failure_fraction": "failure_fraction"}
#: Every metric family /metrics exports.
METRIC_NAMES = ("contimg_up", "contimg_health_status", "contimg_snapshot_age_seconds",
                "contimg_blocks", "contimg_stages", "contimg_backlog_stages",
                "contimg_alerts_active", "contimg_alert_firing", "contimg_stage_seconds",
                *(f"contimg_{name}" for name in LATEST.values()))
_LEVEL = {GREEN: 0, AMBER: 1, RED: 2}
#: The snapshot's age: the one family written per scrape (its HELP and TYPE lines as
#: prometheus_client writes them).
AGE = "contimg_snapshot_age_seconds"
_AGE_HEADER = (f"# HELP {AGE} Seconds since the state store was last read\n"
               f"# TYPE {AGE} gauge\n")


class SnapshotCollector(Collector):
    """Collects every family but the snapshot's age from ``snap``."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snap
        yield GaugeMetricFamily("contimg_up", "1 unless a health check is red",
                                value=float(snap.overall != RED))
        health = GaugeMetricFamily("contimg_health_status",
                                   "Health check: 0 green, 1 amber, 2 red", labels=["check"])
        for check in snap.health:
            health.add_metric([check.name], _LEVEL[check.status])
        yield health
        yield from self._state(snap)
        yield from self._series(snap)

    @staticmethod
    def _state(snap: Snapshot) -> Iterator[Metric]:
        status = snap.status or {"blocks": {}, "stages": {}, "backlog": 0}
        blocks = GaugeMetricFamily("contimg_blocks", "Blocks by status", labels=["status"])
        for name, count in status["blocks"].items():
            blocks.add_metric([name], count)
        yield blocks
        stages = GaugeMetricFamily("contimg_stages", "Block stages by stage and status",
                                   labels=["stage", "status"])
        for stage, counts in status["stages"].items():
            for name, count in counts.items():
                stages.add_metric([stage, name], count)
        yield stages
        yield GaugeMetricFamily("contimg_backlog_stages", "Stages waiting to be claimed",
                                value=status["backlog"])
        active = GaugeMetricFamily("contimg_alerts_active", "Active alerts by severity",
                                   labels=["severity"])
        firing = GaugeMetricFamily("contimg_alert_firing", "1 for each active alert rule",
                                   labels=["rule", "severity"])
        for severity in ("info", "warning", "critical"):
            active.add_metric([severity], sum(a.get("severity") == severity
                                              for a in snap.active_alerts))
        for alert in snap.active_alerts:
            firing.add_metric([str(alert.get("rule")), str(alert.get("severity"))], 1)
        yield active
        yield firing

    @staticmethod
    def _series(snap: Snapshot) -> Iterator[Metric]:
        for name, exported in LATEST.items():
            _, values = snap.series.get(name, ([], []))
            yield GaugeMetricFamily(f"contimg_{exported}", f"Latest sample of {name} (NaN: "
                                    "none yet)", value=values[-1] if values else math.nan)
        seconds = GaugeMetricFamily("contimg_stage_seconds", "Latest duration of each stage",
                                    labels=["stage"])
        for stage in STAGES:
            _, values = snap.series.get(f"stage_seconds.{stage}", ([], []))
            if values:
                seconds.add_metric([stage], values[-1])
        yield seconds


def metrics_text(snap: Snapshot) -> bytes:
    """The Prometheus text exposition of ``snap``'s families (all but its age)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)


def age_text(age_s: float) -> bytes:
    """The snapshot-age family (seconds) in the Prometheus text format."""
    return f"{_AGE_HEADER}{AGE} {floatToGoString(age_s)}\n".encode()


class MetricsText:
    """The ``/metrics`` body of ``latest()`` (the snapshot service's current snapshot):
    its families rendered once per snapshot, its age (``clock()``: Unix s) per call."""

    def __init__(self, latest: Callable[[], Snapshot], clock: Callable[[], float]) -> None:
        self.latest, self.clock = latest, clock
        self._rendered: tuple[Snapshot, bytes] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        snap = self.latest()
        with self._lock:
            if self._rendered is None or self._rendered[0] is not snap:
                self._rendered = (snap, metrics_text(snap))
            text = self._rendered[1]
        return age_text(self.clock() - snap.at) + text
