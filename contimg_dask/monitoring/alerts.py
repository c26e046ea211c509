"""The alert evaluator: runs in the pipeline process (never in the dashboard page), evaluates
the configured rules over the state store's metric series and raises/resolves alerts.

Each transition is notified three ways: a log line (WARNING raised, INFO resolved), an
``alert_raised``/``alert_resolved`` event in the state store (what the dashboard shows,
and what a restarted evaluator reads back to know which alerts are active), and, when
``monitoring.webhook_url`` is set, a JSON POST to it (one attempt with
``monitoring.webhook_timeout_s``; a failed POST is logged, the alert stands in the store).

Call :meth:`AlertEvaluator.evaluate` periodically (the orchestrator: every
``monitoring.evaluate_interval_s``), or :meth:`AlertEvaluator.run` in a thread.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from contimg_dask.config import PipelineConfig
from contimg_dask.config.schema import AlertRuleConfig
from contimg_dask.errors import StateError
from contimg_dask.logs import get_logger
from contimg_dask.monitoring.event_tail import EventTail
from contimg_dask.monitoring.rules import RuleState, evaluate_rule, lookback_s
from contimg_dask.monitoring.signals import derived_samples
from contimg_dask.state import StateStore

log = get_logger(__name__)


def post_webhook(url: str, payload: dict[str, Any], timeout_s: float) -> bool:
    """POST ``payload`` as JSON to ``url``; True on a 2xx answer. Failures are logged (the
    alert is already in the state store), never raised."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError) as exc:
        log.warning("alert webhook %s failed: %s", url, exc)
        return False


class AlertEvaluator:
    """Evaluates ``config.monitoring.alerts`` against ``store``. The active alerts are read
    back from the store's event log at start, so a restart neither repeats nor forgets
    them."""

    def __init__(self, store: StateStore, config: PipelineConfig) -> None:
        self.store = store
        self.config = config
        self.rules = list(config.monitoring.alerts)
        self.tail = EventTail(store, config.monitoring.dashboard.max_events)
        self.tail.update()

    def evaluate(self, now: float | None = None) -> list[dict[str, Any]]:
        """Record the derived signals, evaluate every rule at ``now`` (Unix s; default the
        clock) and notify the transitions; returns them (the events' data, with ``kind``)."""
        now = time.time() if now is None else now
        monitoring = self.config.monitoring
        self.tail.update()
        self.store.record_metrics(derived_samples(self.tail, self.config.paths.resolved(),
                                                  monitoring.failure_window_s, now))
        transitions = []
        for rule in self.rules:
            state = self._state(rule, now)
            active = rule.name in self.tail.active_alerts
            if state.firing and not active:
                transitions.append(self._notify("alert_raised", rule, state, now))
            elif active and not state.firing:
                transitions.append(self._notify("alert_resolved", rule, state, now))
        self.tail.update()
        return transitions

    def _state(self, rule: AlertRuleConfig, now: float) -> RuleState:
        since = None if rule.condition == "absent" else now - lookback_s(rule)
        points = self.store.metric_series(rule.metric, "raw", since=since, until=now)
        return evaluate_rule(rule, [float(p.key) for p in points], [p.mean for p in points],
                             now)

    def _notify(self, kind: str, rule: AlertRuleConfig, state: RuleState,
                now: float) -> dict[str, Any]:
        data = {"rule": rule.name, "severity": rule.severity, "message": state.message(rule),
                "metric": rule.metric, "value": state.value, "since": state.since,
                "runbook": rule.runbook}
        if kind == "alert_raised":
            log.warning("ALERT %s (%s): %s. %s", rule.name, rule.severity, data["message"],
                        rule.runbook)
        else:
            log.info("alert resolved: %s (%s): %s", rule.name, rule.severity, data["message"])
        self.store.emit(kind, data)
        url = self.config.monitoring.webhook_url
        if url:
            post_webhook(url, {"event": kind, "at": now, **data},
                         self.config.monitoring.webhook_timeout_s)
        return {"kind": kind, **data}

    def run(self, stop: threading.Event) -> None:
        """Evaluate every ``monitoring.evaluate_interval_s`` until ``stop`` is set. A state
        store that is down is logged and retried at the next interval."""
        interval = self.config.monitoring.evaluate_interval_s
        while not stop.is_set():
            try:
                self.evaluate()
            except StateError as exc:
                log.warning("alert evaluation skipped: %s", exc)
            stop.wait(interval)
