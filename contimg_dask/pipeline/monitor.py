"""Monitor points the orchestrator records (metric names of the shared vocabulary).

Per stage: ``stage_seconds.<stage>``; from the stages' figures: ``flag_fraction`` (flag),
``calibration_snr`` (calibrate_solve: the gains' median SNR), ``image_noise_jy`` and
``image_dynamic_range`` (image). Per block: ``block_latency_s`` (from its first file's
registration to its last stage done, compared with ``pipeline.latency_budget_s``) and
``blocks_done``. Of the system: ``disk_free_fraction``, ``backlog_blocks``.
"""

from __future__ import annotations

from contimg_dask.stages.contract import StageResult
from contimg_dask.state.records import MetricSample

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
