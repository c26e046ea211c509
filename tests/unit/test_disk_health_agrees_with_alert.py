"""The dashboard's ``products_disk`` health line and the ``disk_low`` alert take their
threshold from one configuration key (the alert rule's ``threshold``): a free fraction below
it gives a red line AND the raised critical alert, above it neither; a warning rule on the
same metric gives the amber band. Real SQLite state store and alert evaluator.

The free space is faked at the system boundary (``shutil.disk_usage``): the disk is outside
the system, and this machine's free space must not decide the outcome."""

from __future__ import annotations

import shutil
import time
from collections import namedtuple
from pathlib import Path

import pytest

from contimg_dask.errors import ContimgError
from contimg_dask.monitoring import AlertEvaluator
from contimg_dask.monitoring.health import AMBER, GREEN, RED, check_disk
from contimg_dask.pipeline import Pipeline
from contimg_dask.state import open_state_store
from tests.helpers import make_config

Usage = namedtuple("Usage", "total used free")
BLOCK_ID = "2026-03-01T12:00:00"


def _fake_free(monkeypatch: pytest.MonkeyPatch, fraction: float) -> None:
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: Usage(1000, round(1000 * (1 - fraction)),
                                           round(1000 * fraction)))


def _rules(root: Path, **thresholds: tuple[float, str]) -> list[dict]:
    """The shipped rules with the disk rules set to ``name=(threshold, severity)``."""
    rules = [r.model_dump() for r in make_config(root).monitoring.alerts
             if r.metric != "disk_free_fraction"]
    disk = next(r for r in make_config(root).monitoring.alerts if r.name == "disk_low")
    return rules + [{**disk.model_dump(), "name": name, "threshold": threshold,
                     "severity": severity} for name, (threshold, severity) in thresholds.items()]


def _raised(store: object) -> dict[str, str]:
    """The active alerts (rule: severity) by the store's events."""
    active: dict[str, str] = {}
    for event in store.events():
        if event.kind == "alert_raised":
            active[event.data["rule"]] = event.data["severity"]
        elif event.kind == "alert_resolved":
            active.pop(event.data["rule"], None)
    return active


@pytest.mark.parametrize(("thresholds", "free", "line", "alerts"), [
    # the shipped rule (disk_low, critical, below 0.15)
    ({}, 0.10, RED, {"disk_low": "critical"}),
    ({}, 0.20, GREEN, {}),
    # an operator raises disk_low's threshold: the line follows (it stayed amber before)
    ({"disk_low": (0.30, "critical")}, 0.20, RED, {"disk_low": "critical"}),
    ({"disk_low": (0.05, "critical")}, 0.10, GREEN, {}),
    # a warning rule on the same metric is the amber band
    ({"disk_low": (0.15, "critical"), "disk_filling": (0.40, "warning")}, 0.35, AMBER,
     {"disk_filling": "warning"}),
    ({"disk_low": (0.15, "critical"), "disk_filling": (0.40, "warning")}, 0.12, RED,
     {"disk_filling": "warning", "disk_low": "critical"}),
])
def test_health_line_and_alert_from_one_threshold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, thresholds: dict,
        free: float, line: str, alerts: dict[str, str]) -> None:
    overrides = {"monitoring.alerts": _rules(tmp_path, **thresholds)} if thresholds else {}
    config = make_config(tmp_path, **overrides)
    store = open_state_store(config)
    try:
        _fake_free(monkeypatch, free)
        check = check_disk(config)
        AlertEvaluator(store, config).evaluate(time.time())
        assert check.status == line, check.reason
        assert f"{100 * free:.1f} % free" in check.reason
        assert _raised(store) == alerts
        # free space comes back: the line is green and every disk alert resolved
        _fake_free(monkeypatch, 0.9)
        AlertEvaluator(store, config).evaluate(time.time() + 1.0)
        assert check_disk(config).status == GREEN
        assert _raised(store) == {}
    finally:
        store.close()


def test_a_disk_rule_that_is_not_a_free_fraction_is_refused_at_load(tmp_path: Path) -> None:
    rules = _rules(tmp_path, disk_low=(15.0, "critical"))  # a percentage, not a fraction
    with pytest.raises(ContimgError, match="disk_low: a disk_free_fraction rule is 'below'"):
        make_config(tmp_path, **{"monitoring.alerts": rules})


def test_a_stage_refused_for_disk_space_raises_disk_low_and_it_resolves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below ``pipeline.min_free_fraction`` the stage is refused (transient) and its free
    fraction recorded: the evaluator raises ``disk_low`` with the red line, and resolves it
    once space is freed; no alert outside the configured rules stays active (the
    orchestrator used to raise its own ``disk_free``, which nothing ever resolved)."""
    config = make_config(tmp_path)
    store = open_state_store(config)
    try:
        store.enqueue(BLOCK_ID, "ingest")
        _fake_free(monkeypatch, 0.5 * config.pipeline.min_free_fraction)
        with Pipeline(config, state=store) as pipeline:
            assert pipeline.run_lease(store.claim("w", 60.0)) == "pending"
        failures = store.failures()
        assert failures and all(f.error == "DiskSpaceError" for f in failures)
        AlertEvaluator(store, config).evaluate(time.time())
        assert check_disk(config).status == RED
        assert _raised(store) == {"disk_low": "critical"}
        _fake_free(monkeypatch, 0.9)
        evaluator = AlertEvaluator(store, config)
        evaluator.evaluate(time.time() + 1.0)
        assert check_disk(config).status == GREEN
        assert evaluator.tail.active_alerts == {}
    finally:
        store.close()
