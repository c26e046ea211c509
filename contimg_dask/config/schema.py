"""The typed schema of the pipeline configuration.

Every section forbids unknown keys, so a misspelt key fails at load instead of being ignored.
The YAML files under ``config/`` are the single source of the values: fields here carry no
defaults unless the value is genuinely optional. The sections of the services
(``services_schema``) and of the science after imaging (``science_schema``) live beside this
module; they are re-exported here.

Cross-field checks (model validators) start their message with ``<field>:`` so that the
loader can name the offending key rather than the whole section.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from contimg_dask.config.science_schema import (
    MosaicConfig,
    PhotometryConfig,
    PhotometryFinderConfig,
    PhotometryReferencesConfig,
    VariabilityConfig,
    VariabilityThresholdsConfig,
)
from contimg_dask.config.section import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Section,
)
from contimg_dask.config.services_schema import (
    AlertRuleConfig,
    ArchiveConfig,
    ArchiveRetentionRule,
    BreakerConfig,
    DashboardConfig,
    HealthConfig,
    MonitoringConfig,
    OrchestratorConfig,
    RecipesConfig,
    RecipeStep,
    RetryConfig,
    WatcherConfig,
)

__all__ = [
    "AlertRuleConfig",
    "ArchiveConfig",
    "ArchiveRetentionRule",
    "BandConfig",
    "BlocksConfig",
    "BreakerConfig",
    "CalibrationConfig",
    "CasaConfig",
    "DashboardConfig",
    "DaskConfig",
    "FlaggingConfig",
    "HealthConfig",
    "ImagingConfig",
    "InstrumentConfig",
    "LoggingConfig",
    "MonitoringConfig",
    "MosaicConfig",
    "OrchestratorConfig",
    "PathsConfig",
    "PhotometryConfig",
    "PhotometryFinderConfig",
    "PhotometryReferencesConfig",
    "PipelineConfig",
    "PresetConfig",
    "RecipeStep",
    "RecipesConfig",
    "RedisStateConfig",
    "ReferencePositionConfig",
    "RetryConfig",
    "RfiConfig",
    "SimulationConfig",
    "SkyConfig",
    "SqliteStateConfig",
    "StateConfig",
    "StateRetentionConfig",
    "StoreConfig",
    "TelescopeConfig",
    "VariabilityConfig",
    "VariabilityThresholdsConfig",
    "WatcherConfig",
]



class PathsConfig(Section):
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


class ReferencePositionConfig(Section):
    """Array reference position, WGS84 geodetic (the position CASA calls ``OVRO_MMA``)."""

    longitude_rad: Annotated[float, Field(ge=-3.2, le=3.2)]
    latitude_rad: Annotated[float, Field(ge=-1.5708, le=1.5708)]
    height_m: float


class BandConfig(Section):
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


class TelescopeConfig(Section):
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


class BlocksConfig(Section):
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


class StoreConfig(Section):
    """Layout of block stores on disk."""

    time_chunk_integrations: PositiveInt
    rephase_at_ingest: bool
    materialise_rephased: bool


class FlaggingConfig(Section):
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


class CalibrationConfig(Section):
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


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    format: Literal["text", "json"]
    file: Path | None = None


class DaskConfig(Section):
    """The Dask cluster: a LocalCluster of these dimensions, or an existing scheduler.

    ``casa_resource``: the worker resource (``dask worker --resources CASA=1``) each CASA
    process asks for, so a worker runs at most as many as it declares; None, or a cluster
    whose workers declare none, runs CASA beside the pipeline process.
    ``stage_resources``: resources the Dask tasks of a stage ask for (e.g. ``image:
    {MEMORY: 1}`` to place a memory-hungry stage on the workers that declare it), used only
    when some worker declares them. ``reconnect_timeout_s``: how long the client keeps
    reconnecting to a lost scheduler (seconds) before giving up.
    """

    scheduler_address: str | None = None
    n_workers: PositiveInt
    threads_per_worker: PositiveInt
    memory_limit: str
    dashboard_address: str
    casa_resource: str | None
    stage_resources: dict[str, dict[str, PositiveFloat]]
    reconnect_timeout_s: PositiveFloat


class CasaConfig(Section):
    task_timeout_s: PositiveFloat


class ImagingConfig(Section):
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
    wprojplanes: int | None
    w_plane_phase_rad: PositiveFloat
    deconvolver: Literal["auto", "hogbom", "mtmfs"]
    nterms: Annotated[int, Field(ge=1, le=3)]
    bright_source_jy: PositiveFloat
    beam_tracking_min_jy: PositiveFloat | None
    drift_model_min_jy: PositiveFloat | None
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
    wsclean_mgain: Annotated[float, Field(gt=0, le=1)]
    wsclean_spectral_windows: PositiveInt
    wsclean_baseline_averaging_lambda: PositiveFloat | None
    bda_max_loss: Annotated[float, Field(gt=0, le=0.1)] | None


class PresetConfig(Section):
    """Simulator size preset. ``n_antennas: null`` means every active antenna."""

    n_antennas: PositiveInt | None
    channels_per_subband: PositiveInt


class RfiConfig(Section):
    enabled: bool
    narrowband_channels_per_subband: NonNegativeFloat
    narrowband_amplitude_jy: NonNegativeFloat
    burst_probability_per_integration: Fraction
    burst_amplitude_jy: NonNegativeFloat
    bad_antennas: NonNegativeInt
    bad_antenna_amplitude_jy: NonNegativeFloat
    bad_antenna_auto_power_jy: NonNegativeFloat


class SkyConfig(Section):
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


class InstrumentConfig(Section):
    gain_amplitude_sd: NonNegativeFloat
    gain_phase_sd_deg: NonNegativeFloat
    gain_phase_drift_deg_per_hour: NonNegativeFloat
    bandpass_ripple: NonNegativeFloat
    residual_delay_sd_ns: NonNegativeFloat
    noise: bool


class SimulationConfig(Section):
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


class SqliteStateConfig(Section):
    """SQLite state store settings (see docs/state.md)."""

    busy_timeout_ms: PositiveInt
    synchronous: Literal["FULL", "NORMAL"]
    allow_network_filesystem: bool


class RedisStateConfig(Section):
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


class StateRetentionConfig(Section):
    """How long metrics and events are kept, days (null: forever)."""

    raw_days: PositiveFloat | None
    minute_days: PositiveFloat | None
    block_days: PositiveFloat | None
    events_days: PositiveFloat | None


class StateConfig(Section):
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


class PipelineConfig(Section):
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

    @model_validator(mode="after")
    def _disk_alert_above_refusal(self) -> PipelineConfig:
        """A critical disk rule must fire before the orchestrator starts refusing stages for
        disk space (``pipeline.min_free_fraction``), or work stops with no alert raised."""
        for rule in self.monitoring.alerts:
            if (rule.metric == "disk_free_fraction" and rule.severity == "critical"
                    and rule.threshold < self.pipeline.min_free_fraction):
                raise ValueError(
                    f"monitoring.alerts: {rule.name}'s threshold {rule.threshold} is below "
                    f"pipeline.min_free_fraction {self.pipeline.min_free_fraction}: stages "
                    "would be refused for disk space before the alert is raised")
        return self
