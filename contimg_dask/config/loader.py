"""Load and validate the pipeline configuration.

Layers, each overriding the one before:

1. ``config/pipeline.yaml`` (the base),
2. ``config/environments/<environment>.yaml`` (the overlay),
3. ``CONTIMG_<SECTION>__<KEY>[__<SUBKEY>...]`` environment variables (values parsed as YAML
   scalars, e.g. ``CONTIMG_TELESCOPE__SEFD_JY=7000``),
4. ``overrides`` given in code or with ``contimg --set key.sub=value``.

Every error names where the offending value came from (file, environment variable or
override), the dotted key and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.errors import ConfigError

ENV_PREFIX = "CONTIMG_"
ENV_ENVIRONMENT = "CONTIMG_ENV"
ENV_CONFIG_DIR = "CONTIMG_CONFIG_DIR"
DEFAULT_ENVIRONMENT = "development"


def default_config_dir() -> Path:
    """The directory holding ``pipeline.yaml``: ``$CONTIMG_CONFIG_DIR`` or the repository's
    ``config/`` (the package is installed in editable mode from the repository)."""
    if ENV_CONFIG_DIR in os.environ:
        return Path(os.environ[ENV_CONFIG_DIR])
    return Path(__file__).resolve().parents[2] / "config"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file: {exc.strerror}", file=path) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=path) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping of sections", file=path)
    return data


def _merge(base: dict[str, Any], layer: Mapping[str, Any], origin: str,
           origins: dict[str, str], prefix: str = "") -> None:
    """Deep-merge ``layer`` into ``base`` in place, recording which source set each key."""
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, origins, dotted + ".")
        else:
            base[key] = copy.deepcopy(value)
            origins[dotted] = origin
            if isinstance(value, Mapping):
                _record_origins(value, origin, origins, dotted + ".")


def _record_origins(layer: Mapping[str, Any], origin: str, origins: dict[str, str],
                    prefix: str) -> None:
    for key, value in layer.items():
        origins[f"{prefix}{key}"] = origin
        if isinstance(value, Mapping):
            _record_origins(value, origin, origins, f"{prefix}{key}.")


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


#: ``CONTIMG_*`` variables that are not configuration keys.
OTHER_VARIABLES = (ENV_ENVIRONMENT, ENV_CONFIG_DIR)


def configuration_variables(model: type[BaseModel] = PipelineConfig,
                            prefix: tuple[str, ...] = ()) -> list[str]:
    """The environment variable of every configuration key (``CONTIMG_SECTION__KEY``)."""
    names = []
    for field, info in model.model_fields.items():
        if not prefix and field == "environment":  # set by CONTIMG_ENV
            continue
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names += configuration_variables(info.annotation, (*prefix, field))
        else:
            names.append(ENV_PREFIX + "__".join((*prefix, field)).upper())
    return names


def _unknown_variable(name: str) -> ConfigError:
    known = [*OTHER_VARIABLES, *configuration_variables()]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = (f"did you mean {close[0]}?" if close else
            f"known: {', '.join(OTHER_VARIABLES)} and {ENV_PREFIX}<SECTION>__<KEY> for a "
            "configuration key")
    return ConfigError(f"unknown environment variable {name} ({hint})", key=name)


def _env_layers(environ: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """One layer per ``CONTIMG_SECTION__KEY`` variable; any other ``CONTIMG_*`` name than
    :data:`OTHER_VARIABLES` is an error (a misspelt variable must not be ignored)."""
    layers = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in OTHER_VARIABLES:
            continue
        if "__" not in name:
            raise _unknown_variable(name)
        dotted = name[len(ENV_PREFIX):].lower().replace("__", ".")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {name} is not a valid YAML value: {exc}",
                              key=dotted) from exc
        layers.append((f"environment variable {name}", _nest(dotted, value)))
    return layers


def _origin_of(dotted: str, origins: Mapping[str, str], fallback: str) -> str:
    parts = dotted.split(".")
    while parts:
        key = ".".join(parts)
        if key in origins:
            return origins[key]
        parts.pop()
    return fallback


def _locate(error: Mapping[str, Any]) -> tuple[str, str]:
    """The dotted key an error is about, and the explanation.

    Cross-field checks report on their section with a message ``"<field>: ..."``: the field
    is moved into the key.
    """
    dotted = ".".join(str(p) for p in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return dotted, "unknown key (check the spelling against config/pipeline.yaml)"
    if kind == "missing":
        return dotted, "required key is missing"
    given = error.get("input")
    if kind == "value_error" and isinstance(given, Mapping):
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
        field, sep, rest = message.partition(": ")
        if sep and field in given:
            return f"{dotted}.{field}" if dotted else field, f"{rest} (got {given[field]!r})"
        return dotted, message
    return dotted, f"{error['msg']} (got {given!r})"


def load_config(
    environment: str | None = None,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Load, merge and validate the configuration.

    Parameters
    ----------
    environment:
        Overlay name (``development``, ``production``, ``testing``, ...). Defaults to
        ``$CONTIMG_ENV`` or ``development``.
    path:
        The base file, or a directory holding ``pipeline.yaml`` and ``environments/``.
        Defaults to :func:`default_config_dir`.
    overrides:
        Dotted keys to values, applied last (``{"telescope.sefd_jy": 7000}``).
    environ:
        The environment to read ``CONTIMG_*`` variables from (defaults to ``os.environ``).

    Raises
    ------
    ConfigError
        Naming the file (or variable) and the key, for unreadable files, unknown keys,
        wrong types and impossible values.
    """
    environ = os.environ if environ is None else environ
    environment = environment or environ.get(ENV_ENVIRONMENT) or DEFAULT_ENVIRONMENT
    base_path = Path(path) if path is not None else default_config_dir()
    config_dir = base_path if base_path.is_dir() else base_path.parent
    base_file = config_dir / "pipeline.yaml" if base_path.is_dir() else base_path
    overlay_file = config_dir / "environments" / f"{environment}.yaml"

    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    _merge(merged, _read_yaml(base_file), str(base_file), origins)
    if not overlay_file.exists():
        known = sorted(p.stem for p in (config_dir / "environments").glob("*.yaml"))
        raise ConfigError(
            f"unknown environment '{environment}' (known: {', '.join(known) or 'none'})",
            file=overlay_file,
        )
    _merge(merged, _read_yaml(overlay_file), str(overlay_file), origins)
    for origin, layer in _env_layers(environ):
        _merge(merged, layer, origin, origins)
    for dotted, value in (overrides or {}).items():
        _merge(merged, _nest(dotted, value), f"override {dotted}", origins)
    merged["environment"] = environment

    try:
        config = PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        problems = []
        first_key = None
        first_file = None
        for error in exc.errors():
            dotted, explanation = _locate(error)
            origin = _origin_of(dotted, origins, str(base_file))
            first_key = first_key or dotted
            first_file = first_file or origin
            problems.append(f"{origin}: {dotted}: {explanation}")
        raise ConfigError(
            "invalid configuration:\n  " + "\n  ".join(problems), file=first_file, key=first_key
        ) from None
    return config.model_copy(update={"paths": config.paths.resolved()})


def resolved_config(config: PipelineConfig) -> dict[str, Any]:
    """The validated configuration as JSON (secrets masked, as pydantic dumps them): what
    provenance records, and what :func:`config_hash` hashes."""
    return config.model_dump(mode="json")


def config_hash(config: PipelineConfig) -> str:
    """SHA-256 of the validated configuration (for provenance records)."""
    canonical = json.dumps(resolved_config(config), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
