"""Baseline-dependent time averaging in the export for imaging (``imaging.bda_max_loss``),
end to end with WSClean (the cheaper engine) on one noise-free small block (48 antennas)
with point sources near the corners of a 768 x 10" image (1.4 deg from the centre; the
averaging's field radius is then the image's corner, 1.51 deg), imaged with and without the
averaging:

- each source's peak with averaging is within ``bda_max_loss`` + 0.5 % of its peak without;
- the averaged MS has the rows expected from the baselines' uv rates, computed here from the
  unaveraged MS's own UVWs (not from the block store the stage reads); each baseline keeps
  its total INTERVAL (24 integrations) and its summed weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from casacore.tables import table

from contimg_dask.constants import SPEED_OF_LIGHT
from contimg_dask.ops.time_average import sinc_argument_for_loss
from contimg_dask.stages.image import airy_radius_at
from tests.e2e.test_image_stage import _image, _simulate
from tests.image_fits import fit_point_source

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

MAX_LOSS = 0.01
IMSIZE, CELL_ARCSEC = 768, 10.0
GRID = {"imaging.imsize": IMSIZE, "imaging.cell_arcsec": CELL_ARCSEC, "imaging.keep_ms": True}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, dict]:
    root = tmp_path_factory.mktemp("bda")
    block, truth, catalog = _simulate(root, [(1.0, 1.0, 3.0, -0.7), (-1.0, 0.95, 2.0, -0.7),
                                             (1.0, -1.0, 2.5, -0.7)], seed=7, noise=False)
    results = {}
    for label, loss in (("plain", None), ("bda", MAX_LOSS)):
        results[label] = _image(root / label, block, catalog, "wsclean",
                                **GRID, **{"imaging.bda_max_loss": loss})
    return results["plain"], results["bda"], truth


def _baseline_columns(ms: Path) -> dict[str, np.ndarray]:
    with table(str(ms), ack=False) as t:
        spw0 = t.query("DATA_DESC_ID == 0", columns="ANTENNA1, ANTENNA2, TIME, INTERVAL, UVW, "
                       "WEIGHT_SPECTRUM, FLAG")
        columns = {name: spw0.getcol(name) for name in (
            "ANTENNA1", "ANTENNA2", "TIME", "INTERVAL", "UVW", "WEIGHT_SPECTRUM", "FLAG")}
    with table(f"{ms}::SPECTRAL_WINDOW", ack=False) as t:
        columns["FREQ_MAX"] = t.getcol("CHAN_FREQ").max()
        columns["FREQ_MIN"] = t.getcol("CHAN_FREQ").min()
    return columns


def test_edge_sources_keep_their_flux_within_the_loss(images: tuple) -> None:
    plain, bda, truth = images
    ratios = []
    for source in truth["sources"]:
        before = fit_point_source(plain.product("image").path, source["ra_deg"],
                                  source["dec_deg"]).peak
        after = fit_point_source(bda.product("image").path, source["ra_deg"],
                                 source["dec_deg"]).peak
        ratios.append(after / before)
    print("peak with / without averaging:", [f"{r:.4f}" for r in ratios],
          "rows", bda.figures["rows_per_window"], "of", bda.figures["rows_per_window_recorded"])
    for ratio in ratios:
        assert 1 - MAX_LOSS - 0.005 <= ratio <= 1 + 0.005


def test_averaged_ms_has_the_expected_rows(images: tuple) -> None:
    plain, bda, _ = images
    before = _baseline_columns(plain.product("ms").path)
    after = _baseline_columns(bda.product("ms").path)
    tau = float(before["INTERVAL"][0])
    times = np.unique(before["TIME"])
    n_t = len(times)
    # the largest fringe rate at the field's edge (the image's corner, or the PB cutoff at
    # the band's bottom if nearer) per baseline, from the MS's UVWs
    radius_rad = min(np.radians(IMSIZE * CELL_ARCSEC / 3600) / np.sqrt(2),
                     airy_radius_at(0.2, before["FREQ_MIN"], 4.65))
    expected_rows = 0
    pairs = sorted(set(zip(before["ANTENNA1"], before["ANTENNA2"], strict=True)))
    x_max = sinc_argument_for_loss(MAX_LOSS)
    for a1, a2 in pairs:
        rows = (before["ANTENNA1"] == a1) & (before["ANTENNA2"] == a2)
        order = np.argsort(before["TIME"][rows])
        uvw = before["UVW"][rows][order] * before["FREQ_MAX"] / SPEED_OF_LIGHT
        step = np.abs(np.diff(uvw, axis=0)) / tau
        rate = (np.hypot(step[:, 0], step[:, 1]).max() * np.sin(radius_rad)
                + step[:, 2].max() * (1 - np.cos(radius_rad)))
        n = n_t if rate == 0 else int(np.clip(np.floor(x_max / (rate * tau)), 1, n_t))
        expected_rows += -(-n_t // n)
        mine = (after["ANTENNA1"] == a1) & (after["ANTENNA2"] == a2)
        assert after["INTERVAL"][mine].sum() == pytest.approx(n_t * tau, rel=1e-9)
        w_before = np.where(before["FLAG"][rows], 0, before["WEIGHT_SPECTRUM"][rows]).sum()
        w_after = np.where(after["FLAG"][mine], 0, after["WEIGHT_SPECTRUM"][mine]).sum()
        assert w_after == pytest.approx(w_before, rel=1e-5)
    assert len(after["TIME"]) == expected_rows
    assert expected_rows < 0.8 * len(before["TIME"])  # the averaging does average
    assert bda.figures["rows_per_window"] == expected_rows
