"""The Measurement Set writer's time average (ops/time_average.py, ``write_ms(time_averaging=)``)
against CASA ``mstransform(timeaverage=True)``, an independent implementation of the same MS
conventions.

A small simulated block of 11 integrations (not a multiple of 2 or 3, so each average ends
with a partial bin), its correlator files given non-uniform weights (nsamples scaled per
sample) and flags (isolated samples, whole integrations of some baselines, and one baseline's
first three integrations: a whole bin for n = 3), is written twice by our writer: without
time averaging, which CASA then averages over bins of n integrations, and with our average
forced to n on every baseline. Rows are paired by (DATA_DESC_ID, ANTENNA1, ANTENNA2) and
time order (one row per window, baseline and bin in both; CASA's TIME differs on some).

Convention differences, asserted or worked around here (docs/imaging.md, which also says which
side the MS definition supports):

- CASA averages DATA with the weights of SIGMA_SPECTRUM, else of SIGMA (1/σ², one per row and
  polarization: its convention ties SIGMA to DATA and WEIGHT to CORRECTED_DATA), and ignores
  WEIGHT_SPECTRUM. Our writer's per-channel weights are WEIGHT_SPECTRUM; the MS it hands to
  CASA is given SIGMA_SPECTRUM = WEIGHT_SPECTRUM^-1/2 so that CASA reads the same weights.
- CASA leaves FLAG_ROW false on averaged rows whose every sample is flagged; ours sets it
  (the MS definition: FLAG_ROW is true when the whole row is flagged).
- CASA's TIME and INTERVAL end at a bin's last integration with unflagged data; ours are the
  nominal span.
- CASA weighs an integration's TIME_CENTROID and UVW by its row WEIGHT (blind to partial
  flags), ours by its unflagged weights; each is checked against its own convention computed
  from the unaveraged MS, and the two against each other where they coincide.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from casacore.tables import makearrcoldesc, table

from contimg_dask.casa import run_casa
from contimg_dask.config import PipelineConfig
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.outputs.ms_writer import write_ms
from contimg_dask.ops.time_average import TimeAveraging
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.testing.casa_tasks import mstransform_time_average
from tests.helpers import make_config

pytestmark = [pytest.mark.casa, pytest.mark.slow]
N_TIMES = 11
FLAGGED_BIN_BASELINE = 5  # row index within an integration: its first 3 integrations flagged
ROW_COLUMNS = ("ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "TIME", "TIME_CENTROID", "INTERVAL",
               "EXPOSURE", "UVW", "FLAG", "FLAG_ROW", "WEIGHT", "SIGMA", "DATA",
               "WEIGHT_SPECTRUM")


def _spoil(path: Path, rng: np.random.Generator, n_baselines: int) -> None:
    """Non-uniform weights and flags in one correlator file (rows are time-major)."""
    with h5py.File(path, "r+") as f:
        nsamples, flags = f["Data/nsamples"], f["Data/flags"]
        weights = nsamples[...] * rng.uniform(0.3, 3.0, nsamples.shape).astype(np.float32)
        flag = flags[...] | (rng.random(flags.shape) < 0.08)
        rows = flag.reshape(N_TIMES, n_baselines, *flag.shape[1:])
        rows[rng.integers(0, N_TIMES, 12), rng.integers(0, n_baselines, 12)] = True
        rows[:3, FLAGGED_BIN_BASELINE] = True
        nsamples[...] = weights
        flags[...] = flag


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> PipelineConfig:
    return make_config(tmp_path_factory.mktemp("time_average_casa"),
                       **{"telescope.integrations_per_block": N_TIMES})


@pytest.fixture(scope="module")
def full_ms(config: PipelineConfig) -> tuple[Path, Path]:
    """The block store, and its unaveraged MS with SIGMA_SPECTRUM added for CASA."""
    root = config.paths.root
    simulate_blocks(config, root / "sim", SimulationOptions(preset="small", n_blocks=1,
                                                            seed=4, rfi=False))
    files = sorted((root / "sim").glob("*_sb*.hdf5"))
    with h5py.File(files[0]) as f:
        n_baselines = len(f["Header/ant_1_array"]) // N_TIMES
    rng = np.random.default_rng(13)
    for path in files:
        _spoil(path, rng, n_baselines)
    store = ingest_block(files, root / "block.zarr", config)
    full = write_ms(store, root / "full.ms")
    with table(str(full), readonly=False, ack=False) as t:
        weight = t.getcol("WEIGHT_SPECTRUM")
        desc = makearrcoldesc("SIGMA_SPECTRUM", 0.0, shape=list(weight.shape[1:]),
                              valuetype="float")
        t.addcols(desc)
        # flagged samples carry zero weight (ingest): any sigma will do, CASA skips them
        t.putcol("SIGMA_SPECTRUM", np.where(weight > 0, 1 / np.sqrt(np.maximum(
            weight, 1e-30)), 1.0).astype(np.float32))
    return store, full


def _columns(ms: Path) -> dict[str, np.ndarray]:
    with table(str(ms), ack=False) as t:
        return {name: t.getcol(name) for name in ROW_COLUMNS}


def _baseline_order(columns: dict[str, np.ndarray]) -> np.ndarray:
    """Rows by window, baseline, then time: both outputs hold one row per window, baseline
    and bin, so this pairs them bin by bin even where CASA's TIME differs from ours."""
    return np.lexsort((columns["TIME"], columns["ANTENNA2"], columns["ANTENNA1"],
                       columns["DATA_DESC_ID"]))


def _centroid(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean over the first axis (in float64: a float32 sum of weights would move
    MJD seconds by ~100 s), the plain mean where all weights are zero."""
    weights = np.asarray(weights, np.float64)
    if weights.sum() == 0:
        return values.mean(axis=0)
    return np.tensordot(weights, values, axes=1) / weights.sum()


def _reference(full: Path, averaging: TimeAveraging) -> dict[str, np.ndarray]:
    """Per row of our averaged MS (window-major, then ``averaging``'s rows), from the
    unaveraged MS's columns with plain NumPy: the span's first and last integration centres
    (MJD s), the last with unflagged data (the span's last if none); TIME_CENTROID and UVW
    weighted two ways: by each integration's summed unflagged WEIGHT_SPECTRUM (``ours``), and
    by its WEIGHT summed over polarizations, rows wholly flagged left out (``casa``); and
    whether the two coincide (the same number of unflagged samples per polarization in
    every integration holding any)."""
    with table(str(full), ack=False) as t:
        n_spw = len(np.unique(t.getcol("DATA_DESC_ID")))
        shape = (n_spw, N_TIMES, -1)
        times = t.getcol("TIME").reshape(shape)
        uvw = t.getcol("UVW").reshape(*shape, 3)
        flag = t.getcol("FLAG")
        good_weight = np.where(flag, 0.0, t.getcol("WEIGHT_SPECTRUM")).sum(axis=(1, 2))
        n_good = (~flag).sum(axis=1).reshape(*shape, flag.shape[2])
        good_weight = good_weight.reshape(shape)
        row_weight = np.where(t.getcol("FLAG_ROW")[:, None], 0.0,
                              t.getcol("WEIGHT")).sum(axis=1).reshape(shape)
    out: dict[str, list] = {name: [] for name in (
        "first", "last", "last_live", "centroid_ours", "centroid_casa", "uvw_ours",
        "uvw_casa", "coincide")}
    for s in range(n_spw):
        for b, t0, t1 in zip(averaging.baseline, averaging.start, averaging.stop,
                             strict=True):
            span = slice(t0, t1)
            live = np.nonzero(row_weight[s, span, b] > 0)[0]
            out["first"].append(times[s, t0, b])
            out["last"].append(times[s, t1 - 1, b])
            out["last_live"].append(times[s, t0 + live[-1] if len(live) else t1 - 1, b])
            for name, weights in (("ours", good_weight[s, span, b]),
                                  ("casa", row_weight[s, span, b])):
                out[f"centroid_{name}"].append(_centroid(times[s, span, b], weights))
                out[f"uvw_{name}"].append(_centroid(uvw[s, span, b], weights))
            counts = n_good[s, span, b][live]
            out["coincide"].append(len(live) == 0 or (counts == counts.flat[0]).all())
    return {name: np.array(values) for name, values in out.items()}


@pytest.mark.parametrize("n", [2, 3])
def test_writer_averages_time_as_casa_mstransform(config: PipelineConfig,
                                                  full_ms: tuple[Path, Path], n: int) -> None:
    store, full = full_ms
    root = config.paths.root
    with table(str(full), ack=False) as t:
        interval = float(t.getcell("INTERVAL", 0))
        n_baselines = len(set(zip(t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), strict=True)))
    averaging = TimeAveraging.from_factors(np.full(n_baselines, n), N_TIMES)
    ours = _columns(write_ms(store, root / f"ours_{n}.ms", time_averaging=averaging))
    reference = _reference(full, averaging)
    order = _baseline_order(ours)
    ours = {name: value[order] for name, value in ours.items()}
    reference = {name: value[order] for name, value in reference.items()}
    casa = run_casa(config, mstransform_time_average, str(full), str(root / f"casa_{n}.ms"),
                    n * interval)
    # casatools returns (..., row) arrays: to casacore's (row, ...).
    casa = {name: np.transpose(casa[name]) for name in ROW_COLUMNS}
    casa = {name: value[_baseline_order(casa)] for name, value in casa.items()}

    n_spw = len(np.unique(ours["DATA_DESC_ID"]))
    assert len(ours["TIME"]) == len(casa["TIME"]) == averaging.n_rows * n_spw
    for name in ("ANTENNA1", "ANTENNA2", "DATA_DESC_ID"):
        np.testing.assert_array_equal(ours[name], casa[name])
    lengths = np.unique(np.round(ours["INTERVAL"] / interval)).astype(int)
    assert list(lengths) == sorted({n, N_TIMES % n}), "full and partial bins"
    # TIME, INTERVAL: ours the midpoint and length of the nominal span (the MS definition:
    # INTERVAL "does not include the effects of bad data"). CASA's span runs from the bin's
    # first integration to its last one with unflagged data: it ends early where a bin's last
    # integrations are wholly flagged (not where its first are). Integration centres come
    # from JD doubles (±40 µs): 1e-4 s on lengths; midpoints of MJD seconds to 1 µs.
    first, last, last_live = (reference[name] for name in ("first", "last", "last_live"))
    np.testing.assert_allclose(ours["TIME"], (first + last) / 2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(casa["TIME"], (first + last_live) / 2, rtol=0, atol=1e-6)
    ends_early = last_live < last
    assert ends_early.any(), "the test needs bins whose last integrations are flagged"
    np.testing.assert_array_equal(ours["TIME"][~ends_early], casa["TIME"][~ends_early])
    np.testing.assert_allclose(ours["INTERVAL"], last - first + interval, rtol=0, atol=1e-4)
    np.testing.assert_allclose(casa["INTERVAL"], last_live - first + interval, rtol=0,
                               atol=1e-4)
    # EXPOSURE: the integrations with unflagged data (the MS definition's effective
    # interval), the span where all are flagged: the same convention in both.
    np.testing.assert_allclose(ours["EXPOSURE"], casa["EXPOSURE"], rtol=0, atol=1e-4)
    assert (ours["EXPOSURE"] < ours["INTERVAL"] - 1).any()

    flag = ours["FLAG"]
    np.testing.assert_array_equal(flag, casa["FLAG"])
    partly = flag.any(axis=(1, 2)) & ~flag.all(axis=(1, 2))
    whole = flag.all(axis=(1, 2))
    assert partly.any() and whole.any(), "the test needs partly and wholly flagged rows"
    # FLAG_ROW: ours is set where every sample is flagged; CASA leaves it false.
    np.testing.assert_array_equal(ours["FLAG_ROW"], whole)
    assert not casa["FLAG_ROW"].any()

    good = ~flag
    # DATA: complex64 weighted means, to float32 precision: 1e-6 of each value, and 2e-6 of
    # the cross-correlations' median amplitude (measured: 5e-7 Jy at a median of 0.9-1 Jy;
    # the autocorrelations, ~1e4, to 1.5e-3)
    cross = (ours["ANTENNA1"] != ours["ANTENNA2"])[:, None, None] & good
    atol = 2e-6 * np.median(np.abs(casa["DATA"][cross]))
    np.testing.assert_allclose(ours["DATA"][good], casa["DATA"][good], rtol=1e-6, atol=atol)
    # WEIGHT_SPECTRUM: summed unflagged weights; WEIGHT their channel mean, SIGMA 1/√WEIGHT
    np.testing.assert_allclose(ours["WEIGHT_SPECTRUM"][good], casa["WEIGHT_SPECTRUM"][good],
                               rtol=2e-6)
    live = ~whole
    np.testing.assert_allclose(ours["WEIGHT"][live], casa["WEIGHT"][live], rtol=2e-6)
    np.testing.assert_allclose(ours["SIGMA"][live], casa["SIGMA"][live], rtol=2e-6)
    # TIME_CENTROID and UVW: ours weigh each integration by its unflagged weights (those of
    # its samples in DATA's average: the centroid of the averaged data); CASA by its row
    # WEIGHT (one channel's weight) summed over polarizations, blind to how many channels are
    # flagged. Each as the unaveraged MS's columns give it, and equal to each other where
    # every integration has as many unflagged samples. MJD seconds (~5e9 s) to 2 µs; UVW
    # to 1 µm.
    coincide = reference["coincide"]
    assert 0.02 < coincide.mean() < 0.98, "the test needs both kinds of rows"
    for name, ours_ref, casa_ref, atol in (
            ("TIME_CENTROID", reference["centroid_ours"], reference["centroid_casa"], 2e-6),
            ("UVW", reference["uvw_ours"], reference["uvw_casa"], 1e-6)):
        np.testing.assert_allclose(ours[name], ours_ref, rtol=0, atol=atol, err_msg=name)
        np.testing.assert_allclose(casa[name], casa_ref, rtol=0, atol=atol, err_msg=name)
        np.testing.assert_allclose(ours[name][coincide], casa[name][coincide], rtol=0,
                                   atol=atol, err_msg=name)
    assert np.abs(ours["TIME_CENTROID"] - casa["TIME_CENTROID"]).max() > 0.01
