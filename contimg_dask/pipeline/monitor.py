"""Monitor points the orchestrator records (metric names of the shared vocabulary).

Per stage: ``stage_seconds.<stage>``; from the stages' figures: ``flag_fraction`` (flag),
``calibration_snr`` (calibrate_solve: the gains' median SNR), ``image_noise_jy`` and
``image_dynamic_range`` (image). Per block: ``block_latency_s`` (from its first file's
registration to its last stage done, compared with ``pipeline.latency_budget_s``) and
``blocks_done``. Of the system: ``disk_free_fraction``, ``backlog_blocks``; of the Dask
cluster (by ``contimg watch``'s monitor thread): ``heartbeat.dask_workers`` (the number of
workers the scheduler knows) and ``dask_worker_memory_fraction`` (the fullest worker's
memory over its limit).

Per antenna (the dashboard's heatmaps), one compact event per block from the stages'
per-antenna figures (:mod:`contimg_dask.stages.antenna_figures`): ``antenna_flags``
{block_id, antennas, flagged_fraction} after ``flag``, ``solutions`` {block_id, antennas,
amp, phase_deg, snr} after ``calibrate_solve`` (lists in the antennas' order; null where an
antenna has no solution).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from contimg_dask.stages.antenna_figures import (
    FLAGGED,
    SOLUTION_AMP,
    SOLUTION_PHASE,
    SOLUTION_SNR,
    antenna_values,
)
from contimg_dask.stages.contract import StageResult
from contimg_dask.state.records import MetricSample

if TYPE_CHECKING:
    from dask.distributed import Client

#: Metric name <- (stage, figure).
FIGURE_METRICS = {
    "flag_fraction": ("flag", "flagged_fraction"),
    "calibration_snr": ("calibrate_solve", "gain_median_snr"),
    "image_noise_jy": ("image", "noise_jy"),
    "image_dynamic_range": ("image", "dynamic_range"),
}


def stage_samples(result: StageResult, at: float) -> list[MetricSample]:
    """The monitor points of one stage run, attributed to its block."""
    samples = [MetricSample(f"stage_seconds.{result.stage}", result.seconds, at,
                            result.block_id)]
    for name, (stage, figure) in FIGURE_METRICS.items():
        value = result.figures.get(figure)
        if stage == result.stage and isinstance(value, int | float) and not isinstance(
                value, bool):
            samples.append(MetricSample(name, float(value), at, result.block_id))
    return samples


def block_samples(block_id: str, latency_s: float, at: float) -> list[MetricSample]:
    """The monitor points of a block whose recipe is done."""
    return [MetricSample("block_latency_s", latency_s, at, block_id),
            MetricSample("blocks_done", 1.0, at, block_id)]


#: Event kind <- (stage, {event field: figure prefix}).
ANTENNA_EVENTS = {
    "antenna_flags": ("flag", {"flagged_fraction": FLAGGED}),
    "solutions": ("calibrate_solve", {"amp": SOLUTION_AMP, "phase_deg": SOLUTION_PHASE,
                                      "snr": SOLUTION_SNR}),
}


def antenna_events(result: StageResult) -> list[tuple[str, dict[str, Any]]]:
    """The per-antenna events (kind, data) of one stage run; none if it reported no
    per-antenna figures."""
    events = []
    for kind, (stage, fields) in ANTENNA_EVENTS.items():
        if stage != result.stage:
            continue
        data: dict[str, Any] = {"block_id": result.block_id}
        for field, prefix in fields.items():
            data["antennas"], data[field] = antenna_values(result.figures, prefix)
        if data["antennas"]:
            events.append((kind, data))
    return events


def dask_samples(client: Client, at: float) -> list[MetricSample]:
    """The Dask cluster's monitor points, asked of its scheduler now (raises OSError or
    TimeoutError when the scheduler does not answer: then nothing is recorded, and the
    dashboard's ``dask_workers`` line ages)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    samples = [MetricSample("heartbeat.dask_workers", float(len(workers)), at)]
    fractions = [w["metrics"]["memory"] / w["memory_limit"] for w in workers
                 if w.get("memory_limit") and "memory" in w.get("metrics", {})]
    if fractions:
        samples.append(MetricSample("dask_worker_memory_fraction", max(fractions), at))
    return samples
