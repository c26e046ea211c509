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
import warnings
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


#: The signals that end a command as an interrupt (exit 130).
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: object) -> None:
    # Ctrl-C says nothing more; other signals are named ("contimg: interrupted (SIGTERM)").
    raise KeyboardInterrupt(*([] if signum == signal.SIGINT else [signal.Signals(signum).name]))


@contextmanager
def interrupts_end_the_command() -> Iterator[None]:
    """From here on SIGINT and SIGTERM end the command as Ctrl-C does: a KeyboardInterrupt,
    so clean-up runs (temporaries removed), reported by :func:`run` as exit 130. Restored
    on exit (the command may run inside a test process)."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in INTERRUPT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quiet_from_now_on() -> None:
    """After an interrupt, for the rest of the process: library code cut short anywhere
    (a coroutine created but never scheduled, zarr's I/O thread still writing, a finaliser
    of a half-built object) says so in warnings and unraisable-exception reports as it is
    freed, up to interpreter exit. They are logged at DEBUG, not printed: the command's
    output stays its one line."""
    warnings.simplefilter("ignore")
    sys.unraisablehook = lambda unraisable: log.debug(
        "after the interrupt: %s: %s", unraisable.err_msg or "unraisable",
        unraisable.exc_value)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the interpreter's final flush
    does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run(command: Callable[[], int]) -> int:
    """Run ``command`` and map how it ends to an exit code and at most one line on stderr."""
    try:
        with interrupts_end_the_command():
            return command()
    except KeyboardInterrupt as exc:
        _quiet_from_now_on()
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
