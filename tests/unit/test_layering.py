"""The import layers of docs/architecture.md, checked by import-linter (contracts in
pyproject.toml): every import points downward, the pipeline never imports the verification-only
``contimg_dask.testing``, and only the CASA bridge imports CASA."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package under ``root`` with ``root``'s pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = str(LINT_IMPORTS) if LINT_IMPORTS.exists() else shutil.which("lint-imports")
    assert command, "import-linter is not installed (pip install -e '.[test]')"
    return subprocess.run([command, "--no-cache", "--no-logo", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_imports_point_downward() -> None:
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    """The check can fail: a copy of the package where ops (a low layer) imports the
    processing (a high one) breaks the layers contract, naming both modules."""
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(REPO_ROOT / "contimg_dask", tmp_path / "contimg_dask",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    uvw = tmp_path / "contimg_dask" / "ops" / "uvw.py"
    uvw.write_text(uvw.read_text() + "\nfrom contimg_dask.processing import rephase  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "Layers: imports point downward BROKEN" in result.stdout
    assert "contimg_dask.ops.uvw -> contimg_dask.processing.rephase" in result.stdout
