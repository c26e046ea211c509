"""Issue 10, as an operator meets it: outputs that would destroy what we did not write are
refused, every error is one ``contimg: error:`` line with exit 2, interrupts and closed
pipes end cleanly, relative paths work with CASA, bad options and variables are refused.
Most commands run in-process through ``main`` (the same code as the console script); the
signal and pipe tests run the real command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contimg_dask.cli.main import main
from contimg_dask.io.store.block_store import block_node, open_block
from contimg_dask.processing.flag import list_flag_versions
from tests.integration.test_block_store import block_files

BLOCK = "2026-03-21T08:00:00"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``cli(*args) -> (exit code, stdout, stderr)``, run in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONTIMG_ENV", "testing")

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def raw(small_blocks: Path, tmp_path: Path) -> Path:
    """A private copy of the first simulated block's subband files."""
    target = tmp_path / "raw"
    target.mkdir()
    for f in block_files(small_blocks)[0]:
        shutil.copy(f, target)
    return target


def _listing(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in path.rglob("*")}


def _one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("contimg: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


def test_outputs_never_replace_what_we_did_not_write(cli, raw: Path, tmp_path: Path) -> None:
    """Defect 1: `ingest src --out src` deleted the raw files, `export S.zarr --out S.zarr`
    replaced the store by an MS, a directory of notes was wiped, an existing file was moved
    aside with a traceback."""
    before = _listing(raw)
    code, _, err = cli("ingest", "raw", "--block", BLOCK, "--out", "raw")
    assert code == 2 and _listing(raw) == before
    _one_error_line(err, "raw")
    code, _, err = cli("ingest", "raw", "--block", BLOCK, "--out", "raw", "--overwrite")
    assert code == 2 and _listing(raw) == before
    assert cli("ingest", "raw", "--block", BLOCK, "--out", "S.zarr")[0] == 0
    store = _listing(tmp_path / "S.zarr")
    for out in ("S.zarr", "S.zarr/inside.uvh5"):
        code, _, err = cli("export", "S.zarr", "--format", "uvh5", "--out", out)
        assert code == 2 and _listing(tmp_path / "S.zarr") == store
        _one_error_line(err, "input")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep")
    (tmp_path / "existing").write_text("keep too")
    for fmt, out in (("ms", "notes"), ("uvh5", "notes"), ("uvh5", "existing"),
                     ("miriad", "existing")):
        code, _, err = cli("export", "S.zarr", "--format", fmt, "--out", out)
        assert code == 2, (fmt, out)
        _one_error_line(err, "refusing to replace", "--overwrite")
    assert (notes / "notes.txt").read_text() == "keep"
    assert (tmp_path / "existing").read_text() == "keep too"
    code, _, err = cli("ingest", "raw", "--block", BLOCK, "--out", "notes")
    assert code == 2 and (notes / "notes.txt").read_text() == "keep"
    # The same kind of product is replaced; with --overwrite, anything else is.
    assert cli("ingest", "raw", "--block", BLOCK, "--out", "S.zarr")[0] == 0
    assert cli("export", "S.zarr", "--format", "uvh5", "--out", "existing",
               "--overwrite")[0] == 0
    assert (tmp_path / "existing").read_bytes()[:4] == b"\x89HDF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S.zarr", "existing", "notes", "raw"]


def test_every_error_is_one_line_with_exit_2(cli, raw: Path, tmp_path: Path) -> None:
    """Defect 5: permission denied, `--out .`, `flag --version ../x` and bad simulate
    options were tracebacks with exit 1."""
    assert cli("ingest", "raw", "--block", BLOCK, "--out", "S.zarr")[0] == 0
    unwritable = "/proc/contimg.uvh5" if os.geteuid() == 0 else "/contimg.uvh5"
    code, _, err = cli("export", "S.zarr", "--format", "uvh5", "--out", unwritable)
    assert code == 2
    _one_error_line(err, "cannot write", unwritable)
    code, _, err = cli("export", "S.zarr", "--format", "ms", "--out", ".")
    assert code == 2 and (tmp_path / "S.zarr").is_dir()
    _one_error_line(err)
    code, _, err = cli("flag", "S.zarr", "--version", "../x")
    assert code == 2
    _one_error_line(err, "'../x'")
    for args in (["--blocks", "0"], ["--start", "notadate"]):
        code, _, err = cli("simulate", "sim", *args)
        assert code == 2 and err.strip().splitlines()[-1].startswith("contimg simulate: error:")
    code, _, err = cli("simulate", "sim", "--missing", "ab")
    assert code == 2
    _one_error_line(err, "--missing 'ab'")
    assert not (tmp_path / "sim").exists()


def test_bad_options_and_variables_are_refused(cli, raw: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 7: `flag --version a/b` made a nested group, `--version ""` was accepted,
    `rephase --ra 400 --dec 100` rewrote the store, `simulate --missing 99` was ignored,
    misspelt CONTIMG_* variables were ignored."""
    assert cli("ingest", "raw", "--block", BLOCK, "--out", "S.zarr")[0] == 0
    store = tmp_path / "S.zarr"
    before = _listing(store)
    for version in ("a/b", "", "ingest", ".x", "a b"):
        code, _, err = cli("flag", "S.zarr", "--version", version)
        assert code == 2, version
        _one_error_line(err)
    assert list_flag_versions(store)["versions"].keys() == {"ingest"}
    code, _, err = cli("rephase", "S.zarr", "--ra", "400", "--dec", "100")
    assert code == 2 and "right ascension 400.0 deg is not in [0, 360)" in err
    code, _, err = cli("rephase", "S.zarr", "--ra", "10", "--dec", "100")
    assert code == 2 and "declination 100.0 deg is not in [-90, 90]" in err
    assert _listing(store) == before
    code, _, err = cli("simulate", "sim", "--missing", "99")
    assert code == 2
    _one_error_line(err, "--missing '99'", "00..15")
    monkeypatch.setenv("CONTIMG_NOSUCH", "1")
    code, _, err = cli("config")
    assert code == 2
    _one_error_line(err, "unknown environment variable CONTIMG_NOSUCH")
    monkeypatch.delenv("CONTIMG_NOSUCH")
    monkeypatch.setenv("CONTIMG_BLOCKS_TIMESTAMP_TOLERANCE_S", "30")
    code, _, err = cli("config")
    assert code == 2
    _one_error_line(err, "did you mean CONTIMG_BLOCKS__TIMESTAMP_TOLERANCE_S?")


@pytest.mark.slow
def test_relative_paths_reach_casa(cli, tmp_path: Path) -> None:
    """Defect 6: CASA runs in a directory of its own; `calibrate export idem/S.zarr --ms
    idem/t1.ms --out noise/cal` (the user guide's relative paths) failed."""
    (tmp_path / "idem").mkdir()
    assert cli("simulate", "raw", "--transit", "3C286")[0] == 0
    block = sorted((tmp_path / "raw").glob("*_sb*.hdf5"))[0].name[:19]
    for args in (["ingest", "raw", "--block", block, "--out", "idem/S.zarr"],
                 ["calibrate", "solve", "idem/S.zarr", "--out", "idem/sol.zarr"],
                 ["export", "idem/S.zarr", "--format", "ms", "--out", "idem/t1.ms"]):
        code, _, err = cli(*args)
        assert code == 0, err
    code, out, err = cli("calibrate", "export", "idem/sol.zarr", "--ms", "idem/t1.ms",
                         "--out", "noise/cal")
    assert code == 0, err
    assert out.split() == [str(tmp_path / "noise/cal.B"), str(tmp_path / "noise/cal.G")]
    from contimg_dask.casa.caltables import read_caltable
    assert read_caltable(tmp_path / "noise/cal.G").kind == "G Jones"


def _contimg(*args: str, cwd: Path, **popen: object) -> subprocess.Popen:
    """The ``contimg`` executable's entry point (cli/entry.py), in its own session."""
    return subprocess.Popen([sys.executable, "-m", "contimg_dask.cli.entry", *args], cwd=cwd,
                            env={**os.environ, "CONTIMG_ENV": "testing"},
                            start_new_session=True, text=True, **popen)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_ends_cleanly_with_130(raw: Path, tmp_path: Path, signum: int) -> None:
    """Defect 5: Ctrl-C printed 20-76 lines of KeyboardInterrupt. The signal goes to the
    whole process group, as a terminal's Ctrl-C does, once the command writes its store."""
    child = _contimg("ingest", "raw", "--block", BLOCK, "--out", "S.zarr", cwd=tmp_path,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not any(p.name.startswith("S.zarr") for p in tmp_path.iterdir()):  # writing
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.005)
    os.killpg(child.pid, signum)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert err.strip().splitlines() == [f"contimg: interrupted ({signal.Signals(signum).name})"
                                        if signum == signal.SIGTERM else
                                        "contimg: interrupted"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_closed_pipe_ends_quietly(raw: Path, tmp_path: Path) -> None:
    """Defect 5: `contimg blocks --json | head` ended in BrokenPipeError."""
    child = _contimg("blocks", "raw", "--json", cwd=tmp_path, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
    child.stdout.close()  # the reader is gone before the command writes
    err = child.stderr.read()
    child.wait(timeout=120)
    assert child.returncode == 141 and err == ""


def test_store_lock_is_beside_the_store(cli, raw: Path, tmp_path: Path) -> None:
    assert cli("ingest", "raw", "--block", BLOCK, "--out", "S.zarr")[0] == 0
    assert cli("flag", "S.zarr", "--version", "v1")[0] == 0
    assert (tmp_path / "S.zarr.lock").exists()
    assert block_node(open_block(tmp_path / "S.zarr")).to_dataset(
        inherit=False).attrs["contimg"]["flag_versions"].keys() == {"ingest", "v1"}
