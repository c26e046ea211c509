"""Alert rules as pure functions over one metric series (times in Unix s, UTC).

A rule (``monitoring.alerts`` in the configuration, :class:`AlertRuleConfig`) is *firing* at
``now`` when

- ``above``/``below``: the newest samples are all beyond ``threshold`` and the first of that
  unbroken run is at least ``for_s`` seconds old (so one sample beyond the threshold fires a
  ``for_s: 0`` rule at once and a ``for_s: 900`` rule only after 15 minutes of samples that
  stay beyond it); one sample back within the threshold resolves it;
- ``absent``: the newest sample is more than ``for_s`` seconds old. A series with no sample
  at all does not fire (nothing has started yet: there is nothing to be absent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contimg_dask.config.schema import AlertRuleConfig


@dataclass(frozen=True)
class RuleState:
    """The outcome of one rule at one time. ``since``: when the condition started to hold
    (Unix s; None when not holding), ``value``: the newest sample (None if none)."""

    rule: str
    firing: bool
    since: float | None
    value: float | None

    def message(self, rule: AlertRuleConfig) -> str:
        """One line for the log, the event and the page."""
        if rule.condition == "absent":
            return f"{rule.metric}: no sample for over {rule.for_s:.0f} s"
        shown = "no data" if self.value is None else f"{self.value:.4g}"
        return f"{rule.metric} = {shown} ({rule.condition} {rule.threshold:g})"


def _beyond(rule: AlertRuleConfig, values: np.ndarray) -> np.ndarray:
    if rule.condition == "above":
        return values > rule.threshold
    return values < rule.threshold


def evaluate_rule(rule: AlertRuleConfig, times: Sequence[float], values: Sequence[float],
                  now: float) -> RuleState:
    """The state of ``rule`` at ``now`` given its metric's samples (``times`` ascending, Unix
    s; samples after ``now`` are ignored)."""
    now = float(now)
    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = t <= now
    t, v = t[keep], v[keep]
    if t.size == 0:
        return RuleState(rule.name, False, None, None)
    newest = float(v[-1])
    if rule.condition == "absent":
        since = float(t[-1]) + rule.for_s
        return RuleState(rule.name, now - float(t[-1]) > rule.for_s,
                         since if now > since else None, newest)
    beyond = _beyond(rule, v)
    if not bool(beyond[-1]):
        return RuleState(rule.name, False, None, newest)
    within = np.flatnonzero(~beyond)
    since = float(t[within[-1] + 1]) if within.size else float(t[0])
    return RuleState(rule.name, now - since >= rule.for_s, since, newest)


def lookback_s(rule: AlertRuleConfig) -> float:
    """How far back a rule's series must be read to decide it: twice its duration and at
    least an hour, so that the start of a long unbroken run is seen."""
    return max(2.0 * rule.for_s, 3600.0)
