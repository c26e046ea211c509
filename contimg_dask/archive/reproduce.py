"""``contimg reproduce PRODUCT``: re-run the command a product's provenance recorded, into a
new location, with the configuration the product was made with, and compare the result with
the original (compare.py).

The recorded command's ``--out`` is replaced by ``<dest>/<its name>``; the command runs as a
child ``contimg`` process with the **recorded** configuration (the state store keeps it once
per hash: ``StateStore.configuration``), written to ``<dest>/config/`` (secrets left out:
the child reads them from ``CONTIMG_*`` variables as usual) and passed as ``--config`` and
``--env`` in place of any the command names. A product recorded before configurations were
kept is re-run with the current configuration instead (the report says which). The report
states whether the configuration the child loads has the recorded hash, and which inputs
changed since the product was indexed (a product made from a block store that later stages
changed, flags or calibration, is not expected to agree).
"""

from __future__ import annotations

import copy
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from contimg_dask.archive.compare import compare_products
from contimg_dask.archive.fingerprint import fingerprint
from contimg_dask.archive.records import ArchiveEntry
from contimg_dask.config import PipelineConfig, config_hash, load_config, resolved_config
from contimg_dask.errors import ContimgError, InputError

#: Global options of ``contimg`` that the reproduction sets itself.
REPLACED_OPTIONS = ("--config", "--env")


def write_config_snapshot(values: dict[str, Any], directory: Path) -> Path:
    """A resolved configuration (``config.resolved_config``) as a configuration directory
    ``contimg --config`` reads (``pipeline.yaml`` and an empty overlay for its environment);
    the Redis password is left out."""
    values = copy.deepcopy(values)
    environment = values.pop("environment")
    redis_settings = values.get("state", {}).get("redis")
    if isinstance(redis_settings, dict):
        redis_settings["password"] = None
    (directory / "environments").mkdir(parents=True, exist_ok=True)
    (directory / "pipeline.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    (directory / "environments" / f"{environment}.yaml").write_text("{}\n")
    return directory


def _without_options(args: list[str], names: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not any(arg.startswith(f"{name}=") for name in names):
            out.append(arg)
    return out


def rewrite_command(command: str, dest: Path, environment: str,
                    config_dir: Path) -> tuple[list[str], Path, Path]:
    """The recorded ``command`` as arguments of ``contimg`` writing into ``dest`` with
    ``--config config_dir --env environment`` (in place of the command's own); returns
    (arguments, the old ``--out``, the new one)."""
    words = shlex.split(command)
    if not words or words[0] != "contimg":
        raise InputError(f"recorded command is not a contimg command: {command!r}")
    args = _without_options(words[1:], REPLACED_OPTIONS)
    if "--out" not in args:
        raise InputError(f"recorded command has no --out to redirect: {command!r}")
    at = args.index("--out") + 1
    old = Path(args[at])
    new = dest / old.name
    args[at] = str(new)
    return ["--config", str(config_dir), "--env", environment, *args], old, new


def changed_inputs(entry: ArchiveEntry) -> dict[str, str]:
    """Inputs whose fingerprint differs from the one taken when the product was indexed."""
    changed = {}
    for path, expected in entry.provenance.get("input_fingerprints", {}).items():
        try:
            now = fingerprint(path)
        except InputError:
            changed[path] = "missing"
            continue
        if now != expected:
            changed[path] = "changed"
    return changed


def reproduce(entry: ArchiveEntry, config: PipelineConfig, dest: Path,
              timeout_s: float | None = None,
              recorded_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-run ``entry``'s recorded command into ``dest`` with ``recorded_config`` (the
    configuration the product was made with, from the state store; None: ``config``, the
    current one) and compare. Raises InputError when the provenance has no command,
    ContimgError (naming the product) when the command fails."""
    command = entry.provenance.get("command")
    if not command:
        raise InputError("the product's provenance records no command", file=entry.path)
    dest = Path(dest)
    values = recorded_config if recorded_config is not None else resolved_config(config)
    config_dir = write_config_snapshot(values, dest / "config")
    args, old_out, new_out = rewrite_command(command, dest, values["environment"], config_dir)
    original = Path(entry.path)
    if not original.is_relative_to(old_out):
        raise InputError(f"the product is not under its command's --out {old_out}: the "
                         "recorded command does not make it", file=original)
    reproduced = new_out / original.relative_to(old_out)
    loaded = load_config(values["environment"], config_dir)  # as the child loads it
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "contimg_dask.cli.main", *args],
                         capture_output=True, text=True, timeout=timeout_s, check=False)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise ContimgError(f"reproducing {entry.product_id} failed (exit {run.returncode}): "
                           f"{run.stderr.strip()[-2000:]}", file=entry.path)
    comparison = compare_products(entry.kind, original, reproduced, entry.noise_jy)
    return {"product_id": entry.product_id, "command": shlex.join(["contimg", *args]),
            "original": str(original), "reproduced": str(reproduced), "seconds": seconds,
            "config_used": "recorded" if recorded_config is not None else "current",
            "config_matches": entry.provenance.get("config_hash") == config_hash(loaded),
            "changed_inputs": changed_inputs(entry), **comparison}
