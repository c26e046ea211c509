"""Per-antenna figures from the stages to the dashboard: the solutions' per-antenna summary
against gains built with known amplitudes and phases, the orchestrator's antenna events
from a stage result's figures, and the snapshot's heatmap cells."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contimg_dask.monitoring.antenna_views import antenna_order
from contimg_dask.monitoring.snapshot import antenna_cells
from contimg_dask.ops.solution_summary import summarise_solutions
from contimg_dask.pipeline.monitor import antenna_events
from contimg_dask.stages.antenna_figures import FLAGGED, antenna_figures, antenna_values
from contimg_dask.stages.contract import Provenance, StageResult


def test_summary_recovers_known_gains() -> None:
    """g = A e^{iφ} · (bandpass of unit mean amplitude and phases symmetric about 0): the
    median amplitude is A·median|bp|, the circular mean phase φ, also across ±180°; flagged
    samples (set to wild values) are ignored; an antenna flagged throughout is NaN."""
    rng = np.random.default_rng(3)
    n_ant, n_chan, n_pol = 4, 64, 2
    amp = np.array([1.0, 0.8, 1.3, 0.9])
    phase_deg = np.array([0.0, 40.0, 179.0, -120.0])
    gain = (amp * np.exp(1j * np.radians(phase_deg)))[:, None] * np.ones((1, n_pol))
    ripple = np.linspace(-5.0, 5.0, n_chan)  # deg, symmetric: circular mean 0
    bp_amp = 1.0 + 0.05 * rng.standard_normal((n_ant, n_chan, n_pol))
    bandpass = bp_amp * np.exp(1j * np.radians(ripple))[None, :, None]
    bp_flag = np.zeros((n_ant, n_chan, n_pol), bool)
    bp_flag[1, :5] = bp_flag[1, -5:] = True  # symmetric: the ripple's mean stays 0
    bandpass[1, :5] = bandpass[1, -5:] = 50.0 * np.exp(1j * 2.0)  # flagged: must not count
    gain_flag = np.zeros((n_ant, n_pol), bool)
    gain_flag[3] = True
    snr = np.array([[50.0, 52.0], [30.0, 34.0], [20.0, np.nan], [1.0, 1.0]])

    summary = summarise_solutions(gain, gain_flag, snr, bandpass, bp_flag)

    for a in range(3):
        good = ~bp_flag[a]
        expected = amp[a] * np.median(bp_amp[a][good])
        assert summary.amplitude[a] == pytest.approx(expected, rel=1e-9)
        assert summary.phase_deg[a] == pytest.approx(phase_deg[a], abs=1e-6)
    assert summary.snr[:3] == pytest.approx([51.0, 32.0, 20.0])
    assert all(math.isnan(v[3]) for v in (summary.amplitude, summary.phase_deg, summary.snr))


def test_stage_figures_become_one_event_per_block() -> None:
    names = ["1", "2", "10"]
    flag = StageResult("flag", "2026-11-30T10:00:08", (), Provenance((), "h"),
                       {"flagged_fraction": 0.1, "flagged_fraction_sb00": 0.2,
                        **antenna_figures(FLAGGED, names, [0.1, float("nan"), 0.3])})
    assert antenna_values(flag.figures, FLAGGED) == (names, [0.1, None, 0.3])
    assert antenna_events(flag) == [("antenna_flags", {
        "block_id": "2026-11-30T10:00:08", "antennas": names,
        "flagged_fraction": [0.1, None, 0.3]})]
    image = StageResult("image", "2026-11-30T10:00:08", (), Provenance((), "h"),
                        {"noise_jy": 1e-3})
    assert antenna_events(image) == []


def test_heatmap_cells_of_the_last_blocks() -> None:
    events = {f"b{i}": {"block_id": f"b{i}", "antennas": ["2", "10"],
                        "amp": [1.0 + i, 2.0 + i], "snr": [5.0]} for i in range(3)}
    assert antenna_cells(events, ("amp", "snr"), 2) == [
        ("b1", "2", 2.0, 5.0), ("b1", "10", 3.0, None),
        ("b2", "2", 3.0, 5.0), ("b2", "10", 4.0, None)]
    assert sorted(["10", "2", "1", "pad"], key=antenna_order) == ["1", "2", "10", "pad"]
