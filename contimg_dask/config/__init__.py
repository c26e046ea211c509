"""Pipeline configuration: YAML base + environment overlay + ``CONTIMG_*`` variables."""

from contimg_dask.config.loader import (
    config_hash,
    default_config_dir,
    load_config,
    resolved_config,
)
from contimg_dask.config.schema import PipelineConfig

__all__ = ["PipelineConfig", "config_hash", "default_config_dir", "load_config",
           "resolved_config"]
