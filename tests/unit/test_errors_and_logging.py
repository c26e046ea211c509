"""The exception hierarchy carries context and retry advice; logs carry pipeline context."""

from __future__ import annotations

import json
import logging

import pytest

from contimg_dask.errors import (
    CasaError,
    ConfigError,
    ContimgError,
    ExternalToolError,
    IncompleteBlockError,
    InputError,
    UnreadableFileError,
)
from contimg_dask.logs import configure_logging, get_logger, log_context


def test_errors_name_what_failed() -> None:
    exc = UnreadableFileError("truncated file", file="/in/x_sb03.hdf5", block="2026-01-01T00:00:00")
    assert "truncated file" in str(exc)
    assert "file=/in/x_sb03.hdf5" in str(exc) and "block=2026-01-01T00:00:00" in str(exc)
    assert exc.to_dict()["error"] == "UnreadableFileError"


@pytest.mark.parametrize(("cls", "transient"), [
    (ConfigError, False), (InputError, False), (UnreadableFileError, False),
    (IncompleteBlockError, False), (ExternalToolError, True), (CasaError, True),
])
def test_transience_by_class(cls: type[ContimgError], transient: bool) -> None:
    err = cls("x")
    assert isinstance(err, ContimgError)
    assert err.transient is transient


def test_errors_survive_pickling_with_their_context() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(UnreadableFileError("bad", file="x.hdf5", stage="ingest")))
    assert isinstance(err, UnreadableFileError)
    assert (err.message, err.file, err.stage, err.transient) == ("bad", "x.hdf5", "ingest", False)


def test_transience_can_be_overridden() -> None:
    assert CasaError("bad input table", transient=False).transient is False


def test_json_logs_carry_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    log = get_logger("contimg_dask.test")
    with log_context(block="2026-03-21T08:00:00", stage="ingest"), log_context(subband=7):
        log.info("ingested %d rows", 42)
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "ingested 42 rows"
    assert lines[0]["block"] == "2026-03-21T08:00:00"
    assert lines[0]["stage"] == "ingest" and lines[0]["subband"] == 7
    assert "block" not in lines[1]
    logging.getLogger("contimg_dask").handlers.clear()


def test_text_logs_are_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    with log_context(block="B1", stage="flag"):
        get_logger("contimg_dask.test").warning("hello")
    line = capsys.readouterr().err.strip()
    assert "WARNING" in line and "[block=B1 stage=flag]" in line and line.endswith("hello")
    logging.getLogger("contimg_dask").handlers.clear()


def test_json_logging_routes_warnings_and_dask_records(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """With JSON logging a Python warning and a Dask record are JSON lines too, once each
    (Dask's own handler replaced), and Dask silencing its logs leaves ours alone."""
    import warnings

    from distributed.utils import silence_logging_cmgr

    names = ("contimg_dask", "py.warnings", "distributed")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
             for n in names}
    configure_logging("INFO", "json")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = logging._showwarning  # pytest's recorder replaced it
            warnings.warn("a note from a library", UserWarning, stacklevel=1)
        logging.getLogger("distributed.nanny").warning("worker restarted")
        # A LocalCluster silences Dask's handlers (silence_logs): ours must stay as set.
        with silence_logging_cmgr(logging.WARNING):
            get_logger("contimg_dask.test").info("while Dask is quiet")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        logging.captureWarnings(False)
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate
    assert [r["logger"] for r in lines] == ["py.warnings", "distributed.nanny",
                                            "contimg_dask.test"]
    assert "a note from a library" in lines[0]["message"]
    assert lines[1]["message"] == "worker restarted" and lines[1]["level"] == "WARNING"
