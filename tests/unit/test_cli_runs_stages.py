"""The CLI and the demo run stages only through the stage contract (issue 11): no module of
``contimg_dask.cli`` imports the work function behind a stage; each command builds the
stage (``contimg_dask.stages``) and calls its ``run``."""

from __future__ import annotations

import ast

from tests.conftest import REPO_ROOT

#: The functions the stages wrap: what only a stage may call.
STAGE_WORK = {"ingest_block", "rephase_block", "flag_block", "solve_block", "apply_solutions",
              "export_block", "write_ms", "image_block"}


def stage_work_imported(source: str) -> list[str]:
    """``module.name`` of every stage work function ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name in STAGE_WORK]
    return found


def test_cli_imports_no_stage_work_function() -> None:
    cli = sorted((REPO_ROOT / "contimg_dask" / "cli").glob("*.py"))
    assert {p.name for p in cli} >= {"main.py", "calibration.py", "demo.py", "imaging.py"}
    found = {p.name: stage_work_imported(p.read_text()) for p in cli}
    assert {name: imports for name, imports in found.items() if imports} == {}


def test_the_check_sees_a_direct_call() -> None:
    """The check can fail: the way the commands called the work before."""
    before = ("def _cmd_flag(args, config):\n"
              "    from contimg_dask.processing.flag import flag_block, list_flag_versions\n")
    assert stage_work_imported(before) == ["contimg_dask.processing.flag.flag_block"]
