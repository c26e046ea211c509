"""Command-line option types shared by the ``contimg`` commands: each checks its value and
rejects a bad one with a message argparse prints as ``contimg ...: error: ...`` (exit 2)."""

from __future__ import annotations

import argparse
import datetime as dt
import math

from contimg_dask.utc import parse_utc


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace whatever is at the output path (docs/operations.md)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output even when it is not a product of the same "
                             "kind (by default only a product of the same kind is replaced)")


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def right_ascension_deg(text: str) -> float:
    """A right ascension in degrees, 0 <= RA < 360."""
    value = _finite(text)
    if not 0.0 <= value < 360.0:
        raise argparse.ArgumentTypeError(f"right ascension {value} deg is not in [0, 360)")
    return value


def declination_deg(text: str) -> float:
    """A declination in degrees, -90 <= dec <= 90."""
    value = _finite(text)
    if not -90.0 <= value <= 90.0:
        raise argparse.ArgumentTypeError(f"declination {value} deg is not in [-90, 90]")
    return value


def unix_or_none(value: dt.datetime | None) -> float | None:
    """Unix seconds of a time parsed by :func:`utc_time` (naive means UTC); None stays
    None (the option was not given)."""
    from contimg_dask.coords.time import datetime_to_unix

    return None if value is None else datetime_to_unix(value)


def utc_time(text: str) -> dt.datetime:
    """An ISO 8601 time (UTC when it names no zone)."""
    try:
        return parse_utc(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
