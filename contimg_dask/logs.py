"""Structured logging with pipeline context.

``log_context(block=..., stage=..., subband=...)`` attaches context to every record logged
inside it (also across threads started inside it, via :mod:`contextvars`). Records render as
readable lines in development and as JSON lines in production, chosen by the ``logging``
section of the configuration.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "contimg_log_context", default=None
)


def get_logger(name: str) -> logging.Logger:
    """The package logger for module ``name`` (use ``get_logger(__name__)``)."""
    return logging.getLogger(name)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach context fields (block, stage, subband, file, ...) to records logged inside."""
    merged = {**(_CONTEXT.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = dict(_CONTEXT.get() or {})
        return True


class TextFormatter(logging.Formatter):
    """``2026-01-15 12:00:00 INFO contimg_dask.x [block=... stage=...] message``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created))
        context = getattr(record, "context", {})
        ctx = " ".join(f"{k}={v}" for k, v in context.items())
        line = f"{stamp} {record.levelname:<7} {record.name}"
        if ctx:
            line += f" [{ctx}]"
        line += f" {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC ISO), level, logger, message, context fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "context", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text", file: Path | None = None) -> None:
    """Configure the ``contimg_dask`` logger tree.

    Parameters
    ----------
    level:
        Logging level name (``DEBUG``, ``INFO``, ...).
    fmt:
        ``"text"`` for readable lines, ``"json"`` for JSON lines.
    file:
        Optional log file (appended) in addition to standard error.
    """
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    _route("contimg_dask", _handlers(formatter, file), level.upper())
    # JSON: every line on standard error is a JSON object, so Python warnings (through
    # logging) and Dask's own records go through handlers of ours too, at their own levels.
    # Each logger gets handlers of its own: Dask sets the level of its loggers' handlers
    # (LocalCluster's silence_logs), and installs a handler of its own when first imported.
    logging.captureWarnings(fmt == "json")
    if fmt == "json":
        with contextlib.suppress(ImportError):
            importlib.import_module("distributed")
        for name in JSON_ROUTED_LOGGERS:
            _route(name, _handlers(formatter, file), None)


def _handlers(formatter: logging.Formatter, file: Path | None) -> list[logging.Handler]:
    """Standard error, and ``file`` if given, with ``formatter`` and the context filter."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_ContextFilter())
    return handlers


#: Loggers of other packages whose records go through our handlers with JSON logging:
#: Python warnings (``logging.captureWarnings``) and Dask's scheduler, nannies and client.
JSON_ROUTED_LOGGERS = ("py.warnings", "distributed")


def _route(name: str, handlers: list[logging.Handler], level: str | None) -> None:
    """Make ``handlers`` the only handlers of logger ``name`` (level None: unchanged)."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in handlers:
        logger.addHandler(handler)
    if level is not None:
        logger.setLevel(level)
    logger.propagate = False
