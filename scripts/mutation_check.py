"""Plant known, plausible bugs in a copy of the repository and check that the tests notice.

Each mutation replaces one exact piece of text (found exactly once) in one file of a
temporary copy of the repository, then runs the tests meant to catch it with that copy first
on PYTHONPATH (CASA workers and CLI subprocesses inherit it). A mutation is *caught* when
pytest reports failing tests, *missed* when they all pass, and an *error* when pytest cannot
run them (exit code other than 0 or 1). The repository itself is never modified.

    python scripts/mutation_check.py            # every mutation
    python scripts/mutation_check.py --list     # the list, nothing run
    python scripts/mutation_check.py ms_corr_types_swapped w_towards_sign

Run from the repository root with the project's virtual environment; it takes minutes per
mutation (CASA and simulation fixtures). Its last result is recorded in docs/conventions.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COPIED = ("contimg_dask", "config", "tests", "pyproject.toml")


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str  # the planted bug, as an astronomer would meet it
    path: str  # file, relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids expected to catch it


MUTATIONS = (
    Mutation(
        "ms_corr_types_swapped", "MS writer: correlation types XX and YY swapped",
        "contimg_dask/constants.py",
        '"XX": 9, "XY": 10, "YX": 11,\n                          "YY": 12',
        '"XX": 12, "XY": 10, "YX": 11,\n                          "YY": 9',
        ("tests/integration/test_exports.py::test_pyuvdata_reads_our_ms_with_the_right_"
         "conjugation",
         "tests/integration/test_exports.py::test_casa_reads_the_ms_metadata_of_the_correlator_"
         "files")),
    Mutation(
        "ms_channels_reversed", "MS writer: channel frequencies reversed within each window",
        "contimg_dask/io/outputs/ms_writer.py",
        'tab.putcell("CHAN_FREQ", i, freq)', 'tab.putcell("CHAN_FREQ", i, freq[::-1])',
        ("tests/integration/test_exports.py::test_pyuvdata_reads_our_ms_with_the_right_"
         "conjugation",
         "tests/integration/test_exports.py::test_casa_reads_the_ms_metadata_of_the_correlator_"
         "files")),
    Mutation(
        "ms_time_at_start", "MS writer: TIME at the integration's start, not its centre",
        "contimg_dask/io/outputs/ms_writer.py",
        "mjd_s = unix_to_mjd_seconds(ds.time.values)",
        "mjd_s = unix_to_mjd_seconds(ds.time.values) - 0.5 * interval",
        ("tests/integration/test_exports.py::test_casa_reads_the_ms_metadata_of_the_correlator_"
         "files",)),
    Mutation(
        "sumthreshold_doubled", "configuration: SumThreshold threshold doubled (6 -> 12 sigma)",
        "config/pipeline.yaml",
        "sumthreshold_sigma: 6.0", "sumthreshold_sigma: 12.0",
        ("tests/integration/test_flagging.py::test_rfi_recall_by_strength_and_false_flags",)),
    Mutation(
        "flag_extension_off", "flagging: the extension step never runs",
        "contimg_dask/ops/flagging/rfi_detection.py",
        "extension = (params.extension_sigma if last and",
        "extension = (params.extension_sigma if False and",
        ("tests/unit/test_flagging_kernels.py",)),
    Mutation(
        "bandpass_conjugated_on_wrong_antenna",
        "calibration apply: the bandpass conjugated on antenna 2 instead of antenna 1",
        "contimg_dask/ops/calibration.py",
        "c = inv_bandpass[f, i, p].conjugate() * inv_bandpass[f, j, p]",
        "c = inv_bandpass[f, i, p] * inv_bandpass[f, j, p].conjugate()",
        ("tests/unit/test_calibration_kernels.py",)),
    Mutation(
        "calibrated_weights_inverted",
        "calibration apply: weights divided by |b_a b_b|^2 instead of multiplied",
        "contimg_dask/ops/calibration.py",
        "channel_weight[f, p] = 1.0 / power if power > 0.0 else 0.0",
        "channel_weight[f, p] = power",
        ("tests/unit/test_calibration_kernels.py",)),
    Mutation(
        "w_towards_sign", "w towards a direction with the wrong sign (simulator and model share"
        " it)",
        "contimg_dask/ops/uvw.py",
        "return cd * np.cos(h) * b[..., 0] - cd * np.sin(h) * b[..., 1] + np.sin(d) * b[..., 2]",
        "return -(cd * np.cos(h) * b[..., 0] - cd * np.sin(h) * b[..., 1]"
        " + np.sin(d) * b[..., 2])",
        ("tests/unit/test_coords.py",)),
    Mutation(
        "beam_radius_for_diameter", "primary beam: the dish radius used for its diameter",
        "contimg_dask/telescope/beam.py",
        "x = np.pi * diameter_m * np.sin(offset)", "x = np.pi * 0.5 * diameter_m * np.sin(offset)",
        ("tests/unit/test_telescope.py",)),
)


def _copy_repository(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)


def _apply(root: Path, mutation: Mutation) -> None:
    path = root / mutation.path
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"{mutation.name}: {mutation.path} has {count} copies of the text to "
                         "mutate (needs exactly 1): the code moved; update MUTATIONS")
    path.write_text(text.replace(mutation.old, mutation.new))


def run(mutation: Mutation, python: str) -> dict:
    """Apply ``mutation`` to a fresh copy and run its tests there."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutation.name}-") as tmp:
        root = Path(tmp)
        _copy_repository(root)
        _apply(root, mutation)
        env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(root / ".numba")}
        t0 = time.perf_counter()
        result = subprocess.run(
            [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header",
             *mutation.tests], cwd=root, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
    outcome = {0: "MISSED", 1: "caught"}.get(result.returncode, "error")
    failed = [line.split(" ")[1] for line in result.stdout.splitlines()
              if line.startswith("FAILED ")]
    return {"name": mutation.name, "what": mutation.what, "outcome": outcome,
            "failed": failed, "seconds": round(seconds, 1),
            "tail": result.stdout.strip().splitlines()[-1:] if outcome == "error" else []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutation(s) {', '.join(unknown)}; known: {', '.join(known)}")
    selected = [known[n] for n in args.names] or list(MUTATIONS)
    if args.list:
        for m in selected:
            print(f"{m.name:40s} {m.what}\n{'':40s} tests: {' '.join(m.tests)}")
        return 0
    results = []
    for mutation in selected:
        result = run(mutation, sys.executable)
        results.append(result)
        print(f"{result['outcome']:7s} {mutation.name:40s} {result['seconds']:7.1f} s  "
              f"{', '.join(result['failed']) or ' '.join(result['tail'])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    missed = [r["name"] for r in results if r["outcome"] != "caught"]
    print(f"{len(results) - len(missed)}/{len(results)} caught"
          + (f"; not caught: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
