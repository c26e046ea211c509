"""The alert rules engine on synthetic metric series: a rule fires once its condition has held
for its for-duration (not before), and resolves when the condition stops holding."""

from __future__ import annotations

import numpy as np
import pytest

from contimg_dask.config.schema import AlertRuleConfig
from contimg_dask.monitoring.rules import evaluate_rule


def rule(condition: str = "above", threshold: float | None = 309.0,
         for_s: float = 900.0) -> AlertRuleConfig:
    return AlertRuleConfig(name="r", metric="block_latency_s", condition=condition,
                           threshold=threshold, for_s=for_s, severity="warning", runbook="-")


def series(values: list[float], start: float = 1e9, step: float = 60.0
           ) -> tuple[np.ndarray, np.ndarray]:
    return start + step * np.arange(len(values)), np.asarray(values, dtype=float)


def test_fires_after_its_for_duration_not_before() -> None:
    # 10 samples within budget, then 20 over it, one a minute: over budget from t0 + 600 s
    t, v = series([200.0] * 10 + [400.0] * 20)
    onset = t[10]
    r = rule(for_s=900.0)
    before = evaluate_rule(r, t, v, onset + 899.0)
    assert not before.firing and before.since == onset
    at = evaluate_rule(r, t, v, onset + 900.0)
    assert at.firing and at.since == onset and at.value == 400.0


def test_resolves_when_the_condition_stops() -> None:
    t, v = series([400.0] * 30 + [250.0])
    r = rule(for_s=900.0)
    assert evaluate_rule(r, t, v, t[-2]).firing
    resolved = evaluate_rule(r, t, v, t[-1])
    assert not resolved.firing and resolved.since is None and resolved.value == 250.0


def test_a_dip_restarts_the_duration() -> None:
    # over, one sample back within, over again: the for-duration counts from the second onset
    t, v = series([400.0] * 20 + [300.0] + [400.0] * 10)
    r = rule(for_s=900.0)
    state = evaluate_rule(r, t, v, t[-1])
    assert state.since == t[21] and not state.firing  # 540 s since the second onset


def test_zero_duration_fires_on_one_sample_and_below_compares_downward() -> None:
    r = rule("below", 0.15, for_s=0.0)
    t, v = series([0.30, 0.20, 0.14])
    assert evaluate_rule(r, t, v, t[-1]).firing
    assert not evaluate_rule(r, t[:2], v[:2], t[1]).firing
    # the threshold itself is not beyond it
    assert not evaluate_rule(r, [t[0]], [0.15], t[0]).firing


def test_samples_after_now_are_ignored() -> None:
    t, v = series([400.0] * 20)
    assert not evaluate_rule(rule(for_s=900.0), t, v, t[5]).firing


@pytest.mark.parametrize(("age_s", "firing"), [(1199.0, False), (1201.0, True)])
def test_absent_fires_once_the_newest_sample_is_older_than_its_duration(
        age_s: float, firing: bool) -> None:
    t, v = series([1.0, 1.0, 1.0])
    state = evaluate_rule(rule("absent", None, for_s=1200.0), t, v, t[-1] + age_s)
    assert state.firing is firing
    assert state.since == (t[-1] + 1200.0 if firing else None)


def test_absent_does_not_fire_before_anything_was_seen() -> None:
    assert not evaluate_rule(rule("absent", None, for_s=1200.0), [], [], 1e9).firing


def test_threshold_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="threshold"):
        rule("above", None)
    with pytest.raises(ValueError, match="threshold"):
        rule("absent", 1.0)
