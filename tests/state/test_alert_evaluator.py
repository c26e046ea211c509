"""The alert evaluator over a real state store (SQLite and a real redis-server) with the
shipped rules: raised after the for-duration and not before, resolved, notified by log line,
state-store event and a webhook POST to a receiver on 127.0.0.1; a restarted evaluator does
not raise an active alert twice; derived signals (failure fraction, open breakers) drive
their rules."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from contimg_dask.config import PipelineConfig
from contimg_dask.monitoring import AlertEvaluator
from contimg_dask.state import MetricSample, StateStore, open_state_store


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: ClassVar[list[dict]] = []
    handler = type("Handler", (Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def alert_store(store_config: Callable[..., PipelineConfig], webhook: tuple[str, list[dict]]
                ) -> Iterator[tuple[StateStore, PipelineConfig]]:
    config = store_config(**{"monitoring.webhook_url": webhook[0]})
    store = open_state_store(config)
    yield store, config
    store.close()


def transitions_of(transitions: list[dict], rule: str) -> list[str]:
    return [t["kind"] for t in transitions if t["rule"] == rule]


def test_latency_alert_raised_after_15_min_then_resolved(
        alert_store: tuple[StateStore, PipelineConfig], webhook: tuple[str, list[dict]],
        caplog: pytest.LogCaptureFixture) -> None:
    store, config = alert_store
    t0 = time.time() - 7200.0
    # one block a minute, 400 s latency (over the 309 s budget) from t0 on
    store.record_metrics(MetricSample("block_latency_s", 400.0, t0 + 60.0 * i, f"b{i}")
                         for i in range(16))
    evaluator = AlertEvaluator(store, config)
    assert transitions_of(evaluator.evaluate(t0 + 899.0), "latency_over_budget") == []
    with caplog.at_level(logging.WARNING, logger="contimg_dask.monitoring.alerts"):
        raised = evaluator.evaluate(t0 + 900.0)
    assert transitions_of(raised, "latency_over_budget") == ["alert_raised"]
    assert any("ALERT latency_over_budget" in r.getMessage() for r in caplog.records)
    # disk_low follows this machine's free disk space, which the test does not control
    events = [e for e in store.events()
              if e.kind == "alert_raised" and e.data["rule"] != "disk_low"]
    assert [e.data["rule"] for e in events] == ["latency_over_budget"]
    assert events[0].data["since"] == pytest.approx(t0) and events[0].data["value"] == 400.0
    posted = [p for p in webhook[1] if p["rule"] == "latency_over_budget"]
    assert [p["event"] for p in posted] == ["alert_raised"]
    assert posted[0]["severity"] == "warning" and "docs/alerts.md" in posted[0]["runbook"]

    # a restarted evaluator reads the active alert back and does not raise it again
    assert transitions_of(AlertEvaluator(store, config).evaluate(t0 + 950.0),
                          "latency_over_budget") == []
    store.record_metrics([MetricSample("block_latency_s", 250.0, t0 + 960.0, "b16")])
    assert transitions_of(evaluator.evaluate(t0 + 961.0),
                          "latency_over_budget") == ["alert_resolved"]
    assert [p["event"] for p in webhook[1] if p["rule"] == "latency_over_budget"] == [
        "alert_raised", "alert_resolved"]
    assert transitions_of(evaluator.evaluate(t0 + 1000.0), "latency_over_budget") == []


def test_failure_fraction_and_open_breaker_drive_their_rules(
        alert_store: tuple[StateStore, PipelineConfig]) -> None:
    store, config = alert_store
    for i in range(8):
        store.emit("stage_done", {"block_id": f"b{i}", "stage": "flag", "seconds": 3.0})
    for i in range(2):
        store.emit("stage_failed", {"block_id": f"b{i}", "stage": "image",
                                    "error": "CasaError", "transient": True})
    store.emit("breaker", {"name": "casa", "state": "open"})
    now = time.time()  # events carry the store's time of emission
    evaluator = AlertEvaluator(store, config)
    # derived signals recorded: 2 failed of 10 runs; one open breaker
    evaluator.evaluate(now)
    [fraction] = store.metric_series("failure_fraction", "raw", since=now - 1, until=now + 1)
    assert fraction.mean == pytest.approx(0.2)
    # failure_fraction > 0.1 for 600 s and breakers_open > 0 for 60 s
    assert transitions_of(evaluator.evaluate(now + 59.0), "breaker_open") == []
    assert transitions_of(evaluator.evaluate(now + 60.0), "breaker_open") == ["alert_raised"]
    assert transitions_of(evaluator.evaluate(now + 600.0), "failure_rate_high") == [
        "alert_raised"]
    store.emit("breaker", {"name": "casa", "state": "closed"})
    assert transitions_of(evaluator.evaluate(now + 601.0), "breaker_open") == [
        "alert_resolved"]
