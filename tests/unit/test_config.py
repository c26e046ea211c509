"""Configuration: layering, validation and error messages that name the file and the key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from contimg_dask.config import config_hash, default_config_dir, load_config
from contimg_dask.errors import ConfigError


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A private copy of the repository's config/ that tests may edit."""
    target = tmp_path / "config"
    shutil.copytree(default_config_dir(), target)
    return target


@pytest.mark.parametrize("environment", ["development", "production", "testing"])
def test_every_environment_loads(environment: str) -> None:
    config = load_config(environment=environment, environ={})
    assert config.environment == environment
    assert config.telescope.band.n_subbands == 16
    assert config.paths.stores.is_absolute()


def test_overlay_overrides_base() -> None:
    dev = load_config(environment="development", environ={})
    prod = load_config(environment="production", environ={})
    assert dev.logging.format == "text"
    assert prod.logging.format == "json"
    assert prod.paths.incoming == Path("/data/incoming")
    assert prod.telescope == dev.telescope  # untouched sections come from the base


def test_environment_variables_override_files() -> None:
    config = load_config(environment="testing", environ={
        "CONTIMG_TELESCOPE__SEFD_JY": "7000",
        "CONTIMG_BLOCKS__MAX_MISSING_SUBBANDS": "4",
        "CONTIMG_ENV": "production",  # no double underscore: not a key
    })
    assert config.telescope.sefd_jy == 7000.0
    assert config.blocks.max_missing_subbands == 4


def test_environment_chosen_by_variable() -> None:
    assert load_config(environ={"CONTIMG_ENV": "production"}).environment == "production"


def test_code_overrides_win() -> None:
    config = load_config(environment="testing", environ={"CONTIMG_TELESCOPE__SEFD_JY": "7000"},
                         overrides={"telescope.sefd_jy": 5000})
    assert config.telescope.sefd_jy == 5000.0


def test_unknown_key_names_file_and_key(config_dir: Path) -> None:
    overlay = config_dir / "environments" / "testing.yaml"
    overlay.write_text(overlay.read_text() + "\nblocks:\n  timestamp_tolerence_s: 60\n")
    with pytest.raises(ConfigError) as info:
        load_config(environment="testing", path=config_dir, environ={})
    message = str(info.value)
    assert "testing.yaml" in message
    assert "blocks.timestamp_tolerence_s" in message
    assert "unknown key" in message


def test_wrong_type_names_key_and_expectation(config_dir: Path) -> None:
    base = config_dir / "pipeline.yaml"
    base.write_text(base.read_text().replace("sefd_jy: 6500.0", "sefd_jy: lots"))
    with pytest.raises(ConfigError) as info:
        load_config(environment="testing", path=config_dir, environ={})
    message = str(info.value)
    assert "pipeline.yaml" in message and "telescope.sefd_jy" in message
    assert "number" in message and "'lots'" in message


def test_impossible_value_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environment="testing", environ={},
                    overrides={"blocks.max_missing_subbands": 16})
    assert "max_missing_subbands" in str(info.value)
    assert "override blocks.max_missing_subbands" in str(info.value)
    with pytest.raises(ConfigError, match=r"telescope\.dish_diameter_m"):
        load_config(environment="testing", environ={},
                    overrides={"telescope.dish_diameter_m": -4.65})
    with pytest.raises(ConfigError, match="inactive_stations"):
        load_config(environment="testing", environ={},
                    overrides={"telescope.inactive_stations": [10, 200]})


def test_disk_alert_below_the_refusal_level_is_rejected() -> None:
    """Stages are refused below pipeline.min_free_fraction; the critical disk alert must be
    raised by then, or the pipeline stops with nothing on the dashboard."""
    with pytest.raises(ConfigError, match=re.escape(
            "disk_low's threshold 0.15 is below pipeline.min_free_fraction 0.2")):
        load_config(environment="testing", environ={},
                    overrides={"pipeline.min_free_fraction": 0.2})
    config = load_config(environment="testing", environ={},
                         overrides={"pipeline.min_free_fraction": 0.15})
    assert config.pipeline.min_free_fraction == 0.15
def test_bad_environment_variable_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="CONTIMG_TELESCOPE__SEFD_JY"):
        load_config(environment="testing", environ={"CONTIMG_TELESCOPE__SEFD_JY": "-1"})


def test_unknown_environment_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="production"):
        load_config(environment="staging", environ={})


def test_broken_yaml_names_the_file(config_dir: Path) -> None:
    (config_dir / "environments" / "testing.yaml").write_text("logging: [unclosed\n")
    with pytest.raises(ConfigError, match=r"testing\.yaml"):
        load_config(environment="testing", path=config_dir, environ={})


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.yaml"):
        load_config(environment="testing", path=tmp_path / "nowhere.yaml", environ={})


def test_config_hash_changes_with_values() -> None:
    a = load_config(environment="testing", environ={})
    b = load_config(environment="testing", environ={}, overrides={"telescope.sefd_jy": 6000})
    assert config_hash(a) == config_hash(load_config(environment="testing", environ={}))
    assert config_hash(a) != config_hash(b)
