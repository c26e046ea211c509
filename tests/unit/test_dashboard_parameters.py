"""The dashboard page's query parameters: ``block`` must be a block id; anything else is
reported and ignored (never echoed unescaped into the page)."""

from __future__ import annotations

from contimg_dask.monitoring.page import block_parameter


def test_a_block_id_is_taken() -> None:
    assert block_parameter({"block": [b"2026-11-30T10:00:08"]}) == ("2026-11-30T10:00:08", [])


def test_anything_else_is_refused_and_escaped() -> None:
    block, problems = block_parameter({"block": [b"<script>alert(1)</script>"],
                                       "exec": [b"rm -rf /"]})
    assert block is None
    assert len(problems) == 2
    assert all("<script>" not in p for p in problems)
    assert any("&lt;script&gt;" in p for p in problems)
    assert any("'exec'" in p for p in problems)
