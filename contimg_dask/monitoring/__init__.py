"""Monitoring: health checks, alert rules and their evaluator (run by the pipeline), and the
read-only Bokeh pipeline dashboard with ``/health`` and ``/metrics`` (docs/operations.md,
docs/alerts.md). It reads the state store only; it never reaches into a running pipeline."""

from contimg_dask.monitoring.alerts import AlertEvaluator
from contimg_dask.monitoring.rules import RuleState, evaluate_rule

__all__ = ["AlertEvaluator", "RuleState", "evaluate_rule"]
