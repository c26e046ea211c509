"""The image stage's choice of spectral windows for its Measurement Set
(``imaging.wsclean_spectral_windows``): windows of whole adjacent subbands with equal channels."""

from __future__ import annotations

import pytest

from contimg_dask.stages.image import spectral_window_count


@pytest.mark.parametrize(("channels", "most", "expected"), [
    ([16] * 16, 2, 2),        # a full block: one window per half of the band
    ([16] * 16, 16, 16),      # one per subband
    ([16] * 16, 3, 2),        # 3 does not divide 16 subbands: the next that does
    ([16] * 11, 2, 1),        # a partial block of 11 subbands: one window
    ([16] * 15 + [8], 2, 1),  # unequal halves (8 + 8 subbands, 128 != 120 channels)
    ([8, 8, 16], 2, 1),
    ([8, 8, 16], 3, 1),
    ([8, 8, 16, 16, 8, 8], 2, 2),  # 32 + 32 channels
    ([8, 8, 8, 8, 16, 16], 2, 1),  # 24 + 40 channels
    ([16], 2, 1),
])
def test_spectral_window_count(channels: list[int], most: int, expected: int) -> None:
    assert spectral_window_count(channels, most) == expected
