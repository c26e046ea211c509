"""The configuration sections of the services around the stages: the orchestrator
(``pipeline``), the watcher, monitoring (health, alerts, dashboard) and the archive."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from contimg_dask.config.section import (
    Fraction,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Section,
)

if TYPE_CHECKING:
    from contimg_dask.config.schema import PathsConfig


class DashboardConfig(Section):
    """The pipeline dashboard (``contimg dashboard``, docs/operations.md). It binds to
    ``host`` (127.0.0.1: this machine only); any other address requires ``access_token``
    (best given as CONTIMG_MONITORING__DASHBOARD__ACCESS_TOKEN), checked on every request."""

    host: str
    port: Annotated[int, Field(ge=0, lt=65536)]
    access_token: SecretStr | None = None
    refresh_s: PositiveFloat          # how often an open page updates, s
    snapshot_s: PositiveFloat         # how often the server re-reads the state store, s
    history_h: PositiveFloat          # metric plots span this many hours
    latency_budget_s: PositiveFloat   # the latency plot's budget line: one block's duration, s
    recent_blocks: PositiveInt        # blocks listed in Processing status
    max_events: PositiveInt           # events kept in memory (alerts, breakers, candidates)
    dask_dashboard_url: str | None = None
    docs_url: str


class HealthConfig(Section):
    """Thresholds of the health checks (green/amber/red). Liveness of a process comes from
    its ``heartbeat.<name>`` metric samples."""

    processes: list[Annotated[str, Field(pattern=r"^[a-z_]+$")]]
    heartbeat_amber_s: PositiveFloat
    heartbeat_red_s: PositiveFloat
    scheduler_timeout_s: PositiveFloat
    casa_breaker: str                 # the breaker name CASA's ``breaker`` events carry
    dask_memory_amber: Fraction       # a Dask worker's memory over its limit: amber above

    @model_validator(mode="after")
    def _ordered(self) -> HealthConfig:
        if self.heartbeat_red_s <= self.heartbeat_amber_s:
            raise ValueError("heartbeat_red_s: must exceed heartbeat_amber_s")
        return self


class AlertRuleConfig(Section):
    """One alert rule (docs/alerts.md): it fires once ``metric`` has been ``above``/``below``
    ``threshold`` for ``for_s`` seconds (``absent``: no sample for ``for_s`` seconds after
    at least one), and resolves when that stops being true."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    metric: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]+$")]
    condition: Literal["above", "below", "absent"]
    threshold: float | None = None
    for_s: NonNegativeFloat
    severity: Literal["info", "warning", "critical"]
    runbook: str

    @model_validator(mode="after")
    def _threshold(self) -> AlertRuleConfig:
        if (self.condition == "absent") != (self.threshold is None):
            raise ValueError("threshold: required for above/below, not allowed for absent")
        return self


class MonitoringConfig(Section):
    """Health checks, alert rules and the dashboard (docs/alerts.md, docs/operations.md).
    The alert evaluator runs every ``evaluate_interval_s`` in the pipeline process."""

    evaluate_interval_s: PositiveFloat
    failure_window_s: PositiveFloat   # failure_fraction: stage outcomes in this window
    webhook_url: str | None = None    # POSTed each alert_raised/alert_resolved (JSON)
    webhook_timeout_s: PositiveFloat
    dashboard: DashboardConfig
    health: HealthConfig
    alerts: list[AlertRuleConfig]

    @field_validator("alerts")
    @classmethod
    def _unique(cls, value: list[AlertRuleConfig]) -> list[AlertRuleConfig]:
        names = [rule.name for rule in value]
        if len(names) != len(set(names)):
            raise ValueError("alert rule names must be unique")
        for rule in value:  # the products_disk health line takes its bands from these
            if rule.metric == "disk_free_fraction" and (
                    rule.condition != "below" or not 0.0 < rule.threshold < 1.0):
                raise ValueError(f"{rule.name}: a disk_free_fraction rule is 'below' a "
                                 "threshold between 0 and 1 (a free fraction)")
        return value


# -- the orchestrator (contimg_dask/pipeline, docs/operations.md) ------------------------------

Dependency = Literal["casa", "state", "disk", "dask"]


class RecipeStep(Section):
    """One stage of a recipe. ``set``: configuration overrides for this stage only (dotted
    keys, e.g. ``imaging.niter: 500``); ``options``: keyword arguments of the stage's
    constructor (e.g. ``fmt: uvfits`` for ``export``)."""

    stage: str
    set: dict[str, object] = Field(default_factory=dict)
    options: dict[str, object] = Field(default_factory=dict)


class RecipesConfig(Section):
    """Which stages, in order, a block goes through: ``calibrator`` for a block a calibrator
    of the catalogue transits, ``target`` for every other block. The kind is decided once
    the first stage (common to both, ``ingest``) has made the block store."""

    calibrator: list[RecipeStep]
    target: list[RecipeStep]

    @model_validator(mode="after")
    def _same_first_stage(self) -> RecipesConfig:
        if not self.calibrator or not self.target:
            raise ValueError("calibrator: both recipes need at least one stage")
        if self.calibrator[0].stage != self.target[0].stage:
            raise ValueError("target: both recipes must start with the same stage (the one "
                             "that makes the block store, ingest)")
        return self


class RetryConfig(Section):
    """In-process retries of a transient failure: exponential backoff from ``initial_s`` up
    to ``max_s`` plus up to ``jitter_s`` of random jitter, at most ``attempts`` tries per
    lease (the state store requeues the stage after that, up to ``state.max_attempts``)."""

    attempts: PositiveInt
    initial_s: PositiveFloat
    max_s: PositiveFloat
    jitter_s: NonNegativeFloat


class BreakerConfig(Section):
    """A circuit breaker per dependency: open after ``fail_max`` consecutive transient
    failures of that dependency; after ``reset_timeout_s`` one trial call (half-open)."""

    fail_max: PositiveInt
    reset_timeout_s: PositiveFloat


class OrchestratorConfig(Section):
    """The orchestrator: recipes, calibration waits, recovery, disk guard, monitor points.

    ``solutions_wait_s``: how long a target block waits for a solve in flight on its strip
    before applying the latest valid solutions; ``poll_interval_s``: how often an idle worker
    looks for work; ``heartbeat_interval_s``: how often a running stage renews its lease
    (well below ``state.lease_s``); ``min_free_fraction``: the products and stores file
    systems' free fraction below which a writing stage is refused (and an alert raised);
    ``latency_budget_s``: the time one block may take (the telescope's block cadence);
    ``dependencies``: which external dependencies (``casa``, ``state``, ``disk``, ``dask``)
    each stage uses, so that an open breaker pauses only the stages behind it;
    ``max_nonfinite_fraction``: a subband with more non-finite visibilities than this is
    recorded as a bad-input failure (the block goes on without it)."""

    recipes: RecipesConfig
    solutions_wait_s: NonNegativeFloat
    poll_interval_s: PositiveFloat
    heartbeat_interval_s: PositiveFloat
    min_free_fraction: Fraction
    latency_budget_s: PositiveFloat
    max_nonfinite_fraction: Fraction
    retry: RetryConfig
    breaker: BreakerConfig
    dependencies: dict[str, list[Dependency]]



class ArchiveRetentionRule(Section):
    """One retention policy (docs/archive.md). ``kind``: ``raw`` (the raw subband files the
    state store registered) or a product kind (``ms``, ``uvfits``, ...). ``when``:
    ``derived_verified``: every product recorded from the file exists and matches its
    checksum (the file's content survives in them); ``sources_verified``: every input the
    product was made from exists and is unchanged since it was indexed (it can be made
    again, e.g. by ``contimg archive get``)."""

    name: str
    kind: str
    older_than_days: NonNegativeFloat
    when: Literal["derived_verified", "sources_verified"]


class ArchiveConfig(Section):
    """The products archive: conversion cache, search, retention (docs/archive.md)."""

    cache_dir: Path | None  # null: <paths.cache>/archive
    cache_max_gb: PositiveFloat
    strip_tolerance_deg: PositiveFloat
    checksum_on_index: bool
    retention: list[ArchiveRetentionRule]

    def cache_path(self, paths: PathsConfig) -> Path:
        """The cache directory (resolved against ``paths``)."""
        resolved = paths.resolved()
        return (resolved.root / self.cache_dir if self.cache_dir is not None
                else resolved.cache / "archive")


class WatcherConfig(Section):
    """The streaming watcher (``contimg watch``): how it finds new subband files on the
    incoming directory, when it takes a file as complete and when it seals a block. Times in
    seconds."""

    #: Listen for file-system events (inotify, through watchdog) besides rescanning.
    file_events: bool
    #: Full listing of the incoming directory this often (events are missed on network file
    #: systems and when the watcher was down).
    rescan_interval_s: PositiveFloat
    #: A file is complete once two looks this far apart find the same size and mtime.
    settle_s: PositiveFloat
    #: A block whose first file was registered this long ago is sealed ``partial``.
    seal_deadline_s: PositiveFloat
    #: How long the state store or the incoming directory may stay unreachable before
    #: ``contimg watch`` exits (it retries every ``rescan_interval_s`` meanwhile; null:
    #: never).
    state_outage_limit_s: PositiveFloat | None
