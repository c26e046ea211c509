"""The Measurement Set written for imaging: channels averaged by our writer as CASA's
``mstransform`` averages them, and the per-integration rescaling of beam tracking.

The block is the session's small simulated block (gains, noise, RFI), ingested, rephased and
flagged (so that some averages hold flagged samples), written once at full resolution and
once averaged by 4 in the writer; CASA ``mstransform`` (chanbin 4, keepflags) averages the
full-resolution MS independently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from casacore.tables import table

from contimg_dask.casa import run_casa
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.outputs.ms_writer import write_ms
from contimg_dask.processing.flag import flag_block
from contimg_dask.processing.rephase import rephase_block
from contimg_dask.testing.casa_tasks import mstransform_channel_average
from tests.helpers import make_config

pytestmark = pytest.mark.casa
WIDTH = 4


@pytest.fixture(scope="module")
def store(small_blocks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ms_for_imaging")
    config = make_config(root)
    files = sorted(small_blocks.glob("*_sb*.hdf5"))[:16]
    out = ingest_block(files, root / "block.zarr", config)
    rephase_block(out)
    flag_block(out, config.flagging)
    return out


def _columns(ms: Path) -> dict[str, np.ndarray]:
    with table(str(ms), ack=False) as t:
        out = {name: t.getcol(name) for name in ("DATA", "FLAG", "DATA_DESC_ID", "TIME",
                                                  "ANTENNA1", "ANTENNA2", "WEIGHT")}
        if "WEIGHT_SPECTRUM" in t.colnames():
            out["WEIGHT_SPECTRUM"] = t.getcol("WEIGHT_SPECTRUM")
    with table(f"{ms}::SPECTRAL_WINDOW", ack=False) as t:
        out["CHAN_FREQ"], out["CHAN_WIDTH"] = t.getcol("CHAN_FREQ"), t.getcol("CHAN_WIDTH")
    return out


def _sorted_rows(columns: dict[str, np.ndarray]) -> np.ndarray:
    return np.lexsort((columns["ANTENNA2"], columns["ANTENNA1"], columns["TIME"],
                       columns["DATA_DESC_ID"]))


def test_writer_averages_channels_as_casa_mstransform(store: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    full = write_ms(store, tmp_path / "full.ms")
    ours = _columns(write_ms(store, tmp_path / "averaged.ms", average_width=WIDTH))
    casa = run_casa(config, mstransform_channel_average, str(full),
                    str(tmp_path / "casa.ms"), WIDTH)
    # casatools returns (pol, channel, row) arrays: to casacore's (row, channel, pol).
    casa = {k: (np.transpose(v) if k in ("DATA", "FLAG", "WEIGHT") else v)
            for k, v in casa.items()}
    casa["CHAN_FREQ"], casa["CHAN_WIDTH"] = casa["CHAN_FREQ"].T, casa["CHAN_WIDTH"].T
    mine, theirs = _sorted_rows(ours), _sorted_rows(casa)
    np.testing.assert_allclose(ours["CHAN_FREQ"], casa["CHAN_FREQ"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours["CHAN_WIDTH"], casa["CHAN_WIDTH"], rtol=1e-12)
    flag_ours, flag_casa = ours["FLAG"][mine], casa["FLAG"][theirs]
    assert 0 < flag_ours.mean() < 0.5, "the test needs partly flagged averages"
    np.testing.assert_array_equal(flag_ours, flag_casa)
    good = ~flag_ours
    data_ours, data_casa = ours["DATA"][mine][good], casa["DATA"][theirs][good]
    # complex64 data: 1e-6 of the visibility scale.
    scale = np.abs(data_casa).max()
    np.testing.assert_allclose(data_ours, data_casa, rtol=0, atol=1e-6 * scale)
    weight_casa = casa["WEIGHT"][theirs]
    weight_ours = ours["WEIGHT_SPECTRUM"][mine]
    if weight_casa.ndim == 2:  # CASA wrote WEIGHT only: the channel mean per polarization
        weight_ours = weight_ours.mean(axis=1)
        good = ~flag_ours.all(axis=1)
    np.testing.assert_allclose(weight_ours[good], weight_casa[good], rtol=1e-5)


def test_rescaled_visibilities_carry_their_noise_in_the_weights(store: Path,
                                                                tmp_path: Path) -> None:
    """Visibilities times g(t, channel), weights divided by g²: the weighted data's
    signal-to-noise is unchanged, as it must be for a mere change of units."""
    plain = _columns(write_ms(store, tmp_path / "plain.ms"))
    with table(str(tmp_path / "plain.ms"), ack=False) as t:
        n_t = len(np.unique(t.getcol("TIME")))
    n_chan_total = plain["CHAN_FREQ"].size
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.8, 1.3, (n_t, n_chan_total))
    scaled = _columns(write_ms(store, tmp_path / "scaled.ms", visibility_scale=scale))
    times = np.unique(plain["TIME"])
    t_index = np.searchsorted(times, plain["TIME"])
    n_chan = plain["CHAN_FREQ"].shape[1]
    g = scale[t_index[:, None], plain["DATA_DESC_ID"][:, None] * n_chan + np.arange(n_chan)]
    np.testing.assert_allclose(scaled["DATA"], plain["DATA"] * g[:, :, None], rtol=2e-6,
                               atol=1e-6 * np.abs(plain["DATA"]).max())
    expected_weight = plain["WEIGHT"][:, None, :] / g[:, :, None] ** 2
    np.testing.assert_allclose(scaled["WEIGHT_SPECTRUM"], expected_weight, rtol=2e-6)
    np.testing.assert_array_equal(scaled["FLAG"], plain["FLAG"])
