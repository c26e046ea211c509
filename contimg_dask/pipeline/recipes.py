"""Recipes: which stages a block goes through, with what configuration (``pipeline.recipes``).

A recipe is a list of steps; each names a stage of the registry
(:mod:`contimg_dask.stages.registry`), configuration overrides for that stage alone and
options for the stage's constructor. A step whose stage is not in the registry (a stage not
built yet) is skipped with a log line, so adding a stage to the pipeline is one recipe line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from contimg_dask.config import PipelineConfig
from contimg_dask.config.schema import RecipeStep
from contimg_dask.errors import ConfigError
from contimg_dask.logs import get_logger
from contimg_dask.stages.contract import Stage
from contimg_dask.stages.registry import STAGES, get_stage

log = get_logger(__name__)

CALIBRATOR, TARGET = "calibrator", "target"


def _nest(updates: Mapping[str, object]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in updates.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _merged(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in layer.items():
        out[key] = (_merged(out[key], value) if isinstance(value, Mapping)
                    and isinstance(out.get(key), dict) else value)
    return out


def with_overrides(config: PipelineConfig, updates: Mapping[str, object]) -> PipelineConfig:
    """``config`` with dotted-key ``updates`` applied and validated again.

    Raises
    ------
    ConfigError
        An override names an unknown key or gives an invalid value.
    """
    if not updates:
        return config
    try:
        return PipelineConfig.model_validate(_merged(config.model_dump(), _nest(updates)))
    except ValueError as exc:
        raise ConfigError(f"invalid recipe override {dict(updates)}: {exc}",
                          key="pipeline.recipes") from None


#: Sections that say how and where the pipeline runs, not what it computes: they do not
#: enter a product's configuration key.
OPERATIONAL_SECTIONS = {"environment", "paths", "logging", "dask", "state", "pipeline", "casa",
                        "simulation"}


def config_key(config: PipelineConfig) -> str:
    """The configuration key of a stage's run: a hash of the sections that decide what it
    computes (with the recipe step's overrides applied). A block submitted again with a
    different key has that stage, and the later ones, run again."""
    data = config.model_dump(mode="json", exclude=OPERATIONAL_SECTIONS)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def make_stage(step: RecipeStep, **extra: object) -> Stage:
    """The stage of ``step``: the registry's instance, or a new one of the same class with
    the step's options (plus ``extra``, e.g. the solutions a target applies)."""
    registered = get_stage(step.stage)
    options = {**step.options, **extra}
    return type(registered)(**options) if options else registered


def recipe(config: PipelineConfig, kind: str) -> list[RecipeStep]:
    """The steps of recipe ``kind`` (``calibrator`` or ``target``) whose stages exist."""
    steps = getattr(config.pipeline.recipes, kind)
    return [step for step in steps if step.stage in STAGES]


def log_skipped_stages(config: PipelineConfig) -> list[str]:
    """Log (once per call) the recipe stages that are not in the registry; returns them."""
    missing = sorted({step.stage for kind in (CALIBRATOR, TARGET)
                      for step in getattr(config.pipeline.recipes, kind)
                      if step.stage not in STAGES})
    for name in missing:
        log.info("recipe stage %r is not in the stage registry (not built yet): skipped; "
                 "stages: %s", name, ", ".join(STAGES))
    return missing


def outdated(steps: list[RecipeStep], statuses: Mapping[str, Any]) -> str | None:
    """The first done stage of ``steps`` that ran before the stage it follows last ran,
    else None: its inputs were made again since (a redo after a configuration change or
    a lost product), so it must run again.

    "Before" is the order of the stages' fencing tokens, which the state store hands out
    in claim order from one counter (no clocks: they may differ between hosts). A redo
    queues only its first stage; each later one is queued by this rule once the one
    before it is done again, so two workers never run a block's stages out of order."""
    previous = None
    for step in steps:
        status = statuses.get(step.stage)
        if status is None or status.status != "done":
            return None
        if (previous is not None and status.token is not None
                and previous.token is not None and status.token < previous.token):
            return step.stage
        previous = status
    return None
