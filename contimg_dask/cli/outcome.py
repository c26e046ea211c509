"""How a ``contimg`` command ends: its exit code and its one-line message.

Exit codes (docs/operations.md): 0 done, 2 error (``contimg: error: ...`` on stderr, for
every error: bad options, bad input, unwritable output, a failed external tool),
130 interrupted (SIGINT or SIGTERM), 141 output pipe closed by its reader
(``contimg blocks --json | head``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from contimg_dask.errors import ContimgError
from contimg_dask.logs import get_logger

log = get_logger(__name__)

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def user_path(text: str) -> Path:
    """A path given on the command line, made absolute (``~`` expanded, symbolic links
    kept) so that child processes working elsewhere (CASA) find it."""
    return Path(os.path.abspath(os.path.expanduser(text)))


def error(message: str) -> int:
    """Print ``contimg: error: message`` and return the error exit code."""
    print(f"contimg: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the command as Ctrl-C does (cleanup runs: temporaries removed)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the interpreter's final flush
    does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run(command: Callable[[], int]) -> int:
    """Run ``command`` and map how it ends to an exit code and at most one line on stderr."""
    try:
        with _terminate_as_interrupt():
            return command()
    except KeyboardInterrupt as exc:
        print(f"contimg: interrupted{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except ContimgError as exc:
        return error(str(exc))
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        return error(f"{exc.strerror or exc}{where}")
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        return error(f"unexpected {type(exc).__name__}: {exc} (a bug: please report it with "
                     "the output of the same command run with --set logging.level=DEBUG)")
