"""One parser of UTC time strings (contimg_dask.utc): the dashboard's archive search, the
command line's time options and block ids all give the same instant for the same time,
written without a zone (UTC), with 'Z' or with an offset; the archive page names the
parameter of a time that does not parse."""

from __future__ import annotations

import argparse
import calendar

import pytest

from contimg_dask.cli.options import unix_or_none, utc_time
from contimg_dask.imaging.mosaic_inputs import block_time_unix
from contimg_dask.monitoring.archive_page import criteria_from
from contimg_dask.utc import parse_utc_unix

# 2026-03-21 09:30:00 UTC, counted independently of datetime's ISO parser.
INSTANT = float(calendar.timegm((2026, 3, 21, 9, 30, 0, 0, 0, 0)))
SAME_INSTANT = ["2026-03-21T09:30:00", "2026-03-21T09:30:00Z", "2026-03-21T09:30:00+00:00",
                "2026-03-21T11:30:00+02:00", "2026-03-21T04:30:00-05:00",
                " 2026-03-21 09:30:00 "]


@pytest.mark.parametrize("text", SAME_INSTANT)
def test_every_spelling_is_the_same_utc_instant_everywhere(text: str) -> None:
    assert parse_utc_unix(text) == INSTANT
    criteria = criteria_from({"from": text, "to": text})
    assert criteria["time_from"] == criteria["time_to"] == INSTANT
    assert unix_or_none(utc_time(text)) == INSTANT
    assert block_time_unix("2026-03-21T09:30:00") == INSTANT


@pytest.mark.parametrize("name", ["from", "to"])
def test_a_bad_time_names_its_parameter(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}: 'yesterday' is not an ISO 8601 time"):
        criteria_from({name: "yesterday"})
    with pytest.raises(argparse.ArgumentTypeError, match="'yesterday' is not an ISO 8601"):
        utc_time("yesterday")
