"""The typed schema of the pipeline configuration.

Every section forbids unknown keys, so a misspelt key fails at load instead of being ignored.
The YAML files under ``config/`` are the single source of the values: fields here carry no
defaults unless the value is genuinely optional.


Cross-field checks (model validators) start their message with ``<field>:`` so that the
loader can name the offending key rather than the whole section.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    """Where things live. Relative paths are taken relative to ``root``; a relative ``root`` is
    taken relative to the working directory at load time."""

    root: Path
    incoming: Path
    stores: Path
    products: Path
    state: Path
    logs: Path
    cache: Path

    def resolved(self) -> PathsConfig:
        root = self.root.expanduser().absolute()
        values = {
            name: (root / getattr(self, name)).expanduser()
            for name in ("incoming", "stores", "products", "state", "logs", "cache")
        }
        return PathsConfig(root=root, **values)


class ReferencePositionConfig(_Section):
    """Array reference position, WGS84 geodetic (the position CASA calls ``OVRO_MMA``)."""

    longitude_rad: Annotated[float, Field(ge=-3.2, le=3.2)]
    latitude_rad: Annotated[float, Field(ge=-1.5708, le=1.5708)]
    height_m: float


class BandConfig(_Section):
    """Frequency layout of one block: ``n_subbands`` files of ``channels_per_subband``
    channels; frequency of subband ``s`` channel ``c`` is
    ``first_channel_hz + (s * channels_per_subband + c) * channel_width_hz``."""

    first_channel_hz: PositiveFloat
    channel_width_hz: float
    channels_per_subband: PositiveInt
    n_subbands: PositiveInt

    @field_validator("channel_width_hz")
    @classmethod
    def _nonzero_width(cls, value: float) -> float:
        if value == 0:
            raise ValueError("channel width must be non-zero (negative: descending frequency)")
        return value


class TelescopeConfig(_Section):
    name: str
    casa_name: str
    instrument: str
    stations_file: Path | None = None
    n_stations: PositiveInt
    inactive_stations: list[PositiveInt]
    reference: ReferencePositionConfig
    dish_diameter_m: PositiveFloat
    sefd_jy: PositiveFloat
    integration_time_s: PositiveFloat
    integrations_per_block: PositiveInt
    polarizations: list[Literal["XX", "YY", "XY", "YX"]]
    band: BandConfig

    @model_validator(mode="after")
    def _stations_in_range(self) -> TelescopeConfig:
        bad = [s for s in self.inactive_stations if s > self.n_stations]
        if bad:
            raise ValueError(
                f"inactive_stations: {bad} are outside the station numbers 1..{self.n_stations}"
            )
        if len(set(self.inactive_stations)) >= self.n_stations:
            raise ValueError("inactive_stations: leaves no active antenna")
        return self


class BlocksConfig(_Section):
    """How subband files are grouped into observation blocks."""

    timestamp_tolerance_s: PositiveFloat
    expected_subbands: PositiveInt
    max_missing_subbands: NonNegativeInt

    @model_validator(mode="after")
    def _missing_below_expected(self) -> BlocksConfig:
        if self.max_missing_subbands >= self.expected_subbands:
            raise ValueError(
                f"max_missing_subbands: {self.max_missing_subbands} must be smaller than "
                f"expected_subbands ({self.expected_subbands})"
            )
        return self


class StoreConfig(_Section):
    """Layout of block stores on disk."""

    time_chunk_integrations: PositiveInt
    rephase_at_ingest: bool
    materialise_rephased: bool


class FlaggingConfig(_Section):
    """RFI and data flagging (see contimg_dask.ops.flagging)."""

    zeros: bool
    autocorrelations: bool
    amplitude_clip_jy: PositiveFloat | None
    bad_antenna_power_sigma: PositiveFloat | None
    bad_antenna_noise_factor: PositiveFloat | None
    bad_antenna_flagged_fraction: Fraction
    sumthreshold: bool
    sumthreshold_sigma: PositiveFloat
    sumthreshold_rho: Annotated[float, Field(gt=1)]
    sumthreshold_windows: list[PositiveInt]
    iterations: PositiveInt
    background_window: tuple[PositiveInt, PositiveInt]
    array_outlier_sigma: PositiveFloat | None
    mad_clip_sigma: PositiveFloat | None
    extension_sigma: PositiveFloat | None
    mostly_flagged_fraction: Fraction


class CalibrationConfig(_Section):
    """Calibrator finding, solving and applying (see docs/calibration.md)."""

    catalog: Path | None = None
    min_apparent_flux_jy: PositiveFloat
    dec_window_deg: PositiveFloat
    model_radius_deg: PositiveFloat
    data_group: str
    reference_antennas: list[str]
    max_reference_flagged_fraction: Fraction
    gain_interval_s: PositiveFloat
    bandpass_min_snr: PositiveFloat
    gain_min_snr: PositiveFloat
    max_interpolated_channels: NonNegativeInt
    solver_max_iterations: PositiveInt
    solver_tolerance: PositiveFloat
    validity_days: PositiveFloat
    dec_tolerance_deg: PositiveFloat
    materialise_corrected: bool


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    format: Literal["text", "json"]
    file: Path | None = None


class DaskConfig(_Section):
    """The Dask cluster: a LocalCluster of these dimensions, or an existing scheduler."""

    scheduler_address: str | None = None
    n_workers: PositiveInt
    threads_per_worker: PositiveInt
    memory_limit: str
    dashboard_address: str


class CasaConfig(_Section):
    task_timeout_s: PositiveFloat


class ImagingConfig(_Section):
    """The ``image`` stage: export for imaging, the engine's parameters, the primary beam and
    the products (see docs/imaging.md for the reasons behind every default)."""

    engine: Literal["tclean", "wsclean"]
    data_group: str
    require_calibration: bool
    channels_per_subband: PositiveInt | None
    imsize: Annotated[int, Field(ge=64)]
    cell_arcsec: PositiveFloat
    weighting: Literal["natural", "uniform", "briggs"]
    robust: Annotated[float, Field(ge=-2, le=2)]
    gridder: Literal["wproject", "widefield"]
    wprojplanes: int
    deconvolver: Literal["auto", "hogbom", "mtmfs"]
    nterms: Annotated[int, Field(ge=1, le=3)]
    bright_source_jy: PositiveFloat
    beam_tracking_min_jy: PositiveFloat | None
    niter: NonNegativeInt
    gain: Annotated[float, Field(gt=0, le=1)]
    threshold_sigma: PositiveFloat
    auto_mask: bool
    auto_mask_sigma: PositiveFloat
    min_uv_lambda: NonNegativeFloat
    pb_cutoff: Annotated[float, Field(gt=0, lt=1)]
    pb_grid_step_deg: PositiveFloat
    threads: PositiveInt
    keep_ms: bool
    quicklook: bool
    wsclean_binary: str


class PresetConfig(_Section):
    """Simulator size preset. ``n_antennas: null`` means every active antenna."""

    n_antennas: PositiveInt | None
    channels_per_subband: PositiveInt


class RfiConfig(_Section):
    enabled: bool
    narrowband_channels_per_subband: NonNegativeFloat
    narrowband_amplitude_jy: NonNegativeFloat
    burst_probability_per_integration: Fraction
    burst_amplitude_jy: NonNegativeFloat
    bad_antennas: NonNegativeInt
    bad_antenna_amplitude_jy: NonNegativeFloat
    bad_antenna_auto_power_jy: NonNegativeFloat


class SkyConfig(_Section):
    n_random_sources: NonNegativeInt
    min_flux_jy: PositiveFloat
    max_flux_jy: PositiveFloat
    flux_power_law_index: float
    spectral_index_mean: float
    spectral_index_sd: NonNegativeFloat
    reference_frequency_hz: PositiveFloat
    field_radius_deg: PositiveFloat
    variable_fraction: Fraction
    variability_rms: NonNegativeFloat
    calibrator_flux_jy: PositiveFloat

    @model_validator(mode="after")
    def _flux_range(self) -> SkyConfig:
        if self.min_flux_jy > self.max_flux_jy:
            raise ValueError("min_flux_jy: must not exceed max_flux_jy")
        return self


class InstrumentConfig(_Section):
    gain_amplitude_sd: NonNegativeFloat
    gain_phase_sd_deg: NonNegativeFloat
    gain_phase_drift_deg_per_hour: NonNegativeFloat
    bandpass_ripple: NonNegativeFloat
    residual_delay_sd_ns: NonNegativeFloat
    noise: bool


class SimulationConfig(_Section):
    start_time: dt.datetime
    pointing_dec_deg: Annotated[float, Field(ge=-90, le=90)]
    block_interval_s: PositiveFloat
    filename_jitter_s: NonNegativeFloat
    seed: int
    presets: dict[str, PresetConfig]
    sky: SkyConfig
    instrument: InstrumentConfig
    rfi: RfiConfig

    @field_validator("presets")
    @classmethod
    def _has_presets(cls, value: dict[str, PresetConfig]) -> dict[str, PresetConfig]:
        for required in ("full", "small"):
            if required not in value:
                raise ValueError(f"preset '{required}' must be defined")
        return value


class SqliteStateConfig(_Section):
    """SQLite state store settings (see docs/state.md)."""

    busy_timeout_ms: PositiveInt
    synchronous: Literal["FULL", "NORMAL"]
    allow_network_filesystem: bool


class RedisStateConfig(_Section):
    """Redis state store settings. ``password`` is best given as the environment variable
    CONTIMG_STATE__REDIS__PASSWORD, not written in a file. ``bind``, ``port``,
    ``appendfsync`` and ``data_dir`` describe the server (``contimg state redis-conf``)."""

    username: str | None = None
    password: SecretStr | None = None  # printed as ********** by `contimg config`
    connect_timeout_s: PositiveFloat
    socket_timeout_s: PositiveFloat
    bind: str
    port: Annotated[int, Field(gt=0, lt=65536)]
    appendfsync: Literal["always", "everysec", "no"]
    data_dir: Path | None = None


class StateRetentionConfig(_Section):
    """How long metrics and events are kept, days (null: forever)."""

    raw_days: PositiveFloat | None
    minute_days: PositiveFloat | None
    block_days: PositiveFloat | None
    events_days: PositiveFloat | None


class StateConfig(_Section):
    """The state store: ``sqlite`` (one machine; ``url: null`` puts it at
    ``<paths.state>/state.sqlite``) or ``redis`` (many processes and hosts;
    ``url: redis://host:port/db``). ``instance`` prefixes every Redis key."""

    backend: Literal["sqlite", "redis"]
    url: str | None = None
    instance: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    max_attempts: PositiveInt
    lease_s: PositiveFloat
    reaper_interval_s: PositiveFloat
    event_redelivery_s: PositiveFloat
    sqlite: SqliteStateConfig
    redis: RedisStateConfig
    retention: StateRetentionConfig

    @model_validator(mode="after")
    def _url_matches_backend(self) -> StateConfig:
        if self.backend == "redis" and not (self.url or "").startswith(
                ("redis://", "rediss://", "unix://")):
            raise ValueError("url: the redis backend needs url: redis://HOST:PORT/DB")
        if self.backend == "sqlite" and self.url and not self.url.startswith("sqlite:///"):
            raise ValueError("url: the sqlite backend takes null or sqlite:///PATH")
        return self


class PipelineConfig(_Section):
    """The whole configuration."""

    environment: str
    paths: PathsConfig
    telescope: TelescopeConfig
    blocks: BlocksConfig
    store: StoreConfig
    flagging: FlaggingConfig
    calibration: CalibrationConfig
    logging: LoggingConfig
    dask: DaskConfig
    casa: CasaConfig
    imaging: ImagingConfig
    simulation: SimulationConfig
    state: StateConfig
    monitoring: MonitoringConfig
    pipeline: OrchestratorConfig
    archive: ArchiveConfig
    photometry: PhotometryConfig
    mosaic: MosaicConfig
    watcher: WatcherConfig


class DashboardConfig(_Section):
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


class HealthConfig(_Section):
    """Thresholds of the health checks (green/amber/red). Liveness of a process comes from
    its ``heartbeat.<name>`` metric samples."""

    processes: list[Annotated[str, Field(pattern=r"^[a-z_]+$")]]
    heartbeat_amber_s: PositiveFloat
    heartbeat_red_s: PositiveFloat
    disk_free_amber: Fraction
    disk_free_red: Fraction
    scheduler_timeout_s: PositiveFloat
    casa_breaker: str                 # the breaker name CASA's ``breaker`` events carry

    @model_validator(mode="after")
    def _ordered(self) -> HealthConfig:
        if self.heartbeat_red_s <= self.heartbeat_amber_s:
            raise ValueError("heartbeat_red_s: must exceed heartbeat_amber_s")
        if self.disk_free_red >= self.disk_free_amber:
            raise ValueError("disk_free_red: must be below disk_free_amber")
        return self


class AlertRuleConfig(_Section):
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


class MonitoringConfig(_Section):
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
        return value


# -- the orchestrator (contimg_dask/pipeline, docs/operations.md) ------------------------------

Dependency = Literal["casa", "state", "disk"]


class RecipeStep(_Section):
    """One stage of a recipe. ``set``: configuration overrides for this stage only (dotted
    keys, e.g. ``imaging.niter: 500``); ``options``: keyword arguments of the stage's
    constructor (e.g. ``fmt: uvfits`` for ``export``)."""

    stage: str
    set: dict[str, object] = Field(default_factory=dict)
    options: dict[str, object] = Field(default_factory=dict)


class RecipesConfig(_Section):
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


class RetryConfig(_Section):
    """In-process retries of a transient failure: exponential backoff from ``initial_s`` up
    to ``max_s`` plus up to ``jitter_s`` of random jitter, at most ``attempts`` tries per
    lease (the state store requeues the stage after that, up to ``state.max_attempts``)."""

    attempts: PositiveInt
    initial_s: PositiveFloat
    max_s: PositiveFloat
    jitter_s: NonNegativeFloat


class BreakerConfig(_Section):
    """A circuit breaker per dependency: open after ``fail_max`` consecutive transient
    failures of that dependency; after ``reset_timeout_s`` one trial call (half-open)."""

    fail_max: PositiveInt
    reset_timeout_s: PositiveFloat


class OrchestratorConfig(_Section):
    """The orchestrator: recipes, calibration waits, recovery, disk guard, monitor points.

    ``solutions_wait_s``: how long a target block waits for a solve in flight on its strip
    before applying the latest valid solutions; ``poll_interval_s``: how often an idle worker
    looks for work; ``heartbeat_interval_s``: how often a running stage renews its lease
    (well below ``state.lease_s``); ``min_free_fraction``: the products and stores file
    systems' free fraction below which a writing stage is refused (and an alert raised);
    ``latency_budget_s``: the time one block may take (the telescope's block cadence);
    ``dependencies``: which external dependencies (``casa``, ``state``, ``disk``) each stage
    uses, so that an open breaker pauses only the stages behind it;
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



class ArchiveRetentionRule(_Section):
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


class ArchiveConfig(_Section):
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



class PhotometryReferencesConfig(_Section):
    """Which catalogue sources set an epoch's flux scale, and how (docs/photometry.md)."""

    min_flux_jy: PositiveFloat
    min_snr: PositiveFloat
    isolation_beams: PositiveFloat
    max_size_arcsec: PositiveFloat
    min_pb: Fraction
    min_count: Annotated[int, Field(ge=3)]
    clip_sigma: PositiveFloat
    max_eta: PositiveFloat


class VariabilityThresholdsConfig(_Section):
    """Candidate thresholds calibrated by benchmarks/variability_thresholds.py at the given
    epoch counts (interpolated linearly in log N between them)."""

    epochs: list[PositiveInt]
    eta: list[PositiveFloat]
    vs: list[PositiveFloat]
    ese_z: list[PositiveFloat]

    @model_validator(mode="after")
    def _same_lengths(self) -> VariabilityThresholdsConfig:
        if not (len(self.epochs) == len(self.eta) == len(self.vs) == len(self.ese_z) >= 1):
            raise ValueError("epochs: epochs, eta, vs and ese_z need one value each per "
                             "calibrated epoch count")
        if sorted(self.epochs) != self.epochs:
            raise ValueError("epochs: must be increasing")
        return self


class VariabilityConfig(_Section):
    """Variability metrics and candidates (docs/variability.md)."""

    min_epochs: Annotated[int, Field(ge=2)]
    v_min: NonNegativeFloat
    m_min: NonNegativeFloat
    ese_widths_days: list[PositiveFloat]
    ese_min_depth: Fraction
    ese_min_inside: PositiveInt
    thresholds: VariabilityThresholdsConfig


class PhotometryFinderConfig(_Section):
    """The source finder that builds a catalogue from a deep image (photutils
    segmentation)."""

    detection_sigma: PositiveFloat
    min_pixels: Annotated[int, Field(ge=2)]


class PhotometryConfig(_Section):
    """The ``photometry`` stage and commands: forced photometry, normalisation, light
    curves (docs/photometry.md)."""

    catalog: Path | None
    image_kind: Literal["image_pbcor", "image"]
    cluster_beams: PositiveFloat
    detection_sigma: PositiveFloat
    noise_box_beams: PositiveFloat
    noise_subsample: PositiveInt
    systematic_fraction: NonNegativeFloat
    references: PhotometryReferencesConfig
    finder: PhotometryFinderConfig
    variability: VariabilityConfig



class MosaicConfig(_Section):
    """``contimg mosaic`` and the ``mosaic`` stage: PB²/σ²-weighted linear mosaics of block
    images (docs/mosaicking.md)."""

    period_s: PositiveFloat
    pb_cutoff: Annotated[float, Field(gt=0, lt=1)]
    projection: Literal["SIN", "CAR"]
    cell_arcsec: PositiveFloat | None
    tile_pixels: Annotated[int, Field(ge=64)]
    interpolation: Literal["nearest-neighbor", "bilinear", "biquadratic", "bicubic"]
    regrid_step_px: NonNegativeInt
    beam_tolerance: Annotated[float, Field(ge=0)]
    quicklook: bool
class WatcherConfig(_Section):
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


PipelineConfig.model_rebuild()
