"""The one parser of UTC time strings (ISO 8601) for the whole pipeline: the command line's
``--start``/``--end``/``--from``/``--to``, the dashboard's archive search, block ids.

A string without a zone is UTC (the instrument, the block ids and the state store are all
UTC); one with ``Z`` or an offset is converted to UTC. It sits in the lowest layer so that
every package (the dashboard included) parses times the same way.
"""

from __future__ import annotations

import datetime as dt


def parse_utc(text: str) -> dt.datetime:
    """An ISO 8601 time as an aware UTC datetime (no zone given: UTC).

    Raises
    ------
    ValueError
        ``text`` is not an ISO 8601 time (the message quotes it).
    """
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time "
                         "(e.g. 2026-03-21T09:30:00, UTC unless it names a zone)") from None
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def parse_utc_unix(text: str) -> float:
    """An ISO 8601 time (no zone given: UTC) as Unix seconds."""
    return parse_utc(text).timestamp()
