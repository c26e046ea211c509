"""The CASA bridge: CASA configured offline, run in its own processes, with time limits."""

from __future__ import annotations

import functools
from typing import Any

from contimg_dask.casa.placement import run_with_resource
from contimg_dask.casa.process import run_in_casa_process
from contimg_dask.config.schema import PipelineConfig


def run_casa(config: PipelineConfig, func: Any, *args: Any, stage: str | None = None,
             **kwargs: Any) -> Any:
    """Run ``func`` in a CASA worker process with the configured directories and time limit:
    on a Dask worker holding the ``dask.casa_resource`` when the cluster declares it, else
    here (:mod:`contimg_dask.casa.placement`)."""
    call = functools.partial(run_in_casa_process, func, *args,
                             log_dir=config.paths.logs / "casa",
                             cache_dir=config.paths.cache / "casa",
                             observatories=casa_observatories(config),
                             timeout_s=config.casa.task_timeout_s, stage=stage, **kwargs)
    return run_with_resource(call, config.dask.casa_resource,
                             getattr(func, "__name__", "call"))


def casa_observatories(config: PipelineConfig) -> dict[str, list[float]]:
    """Names under which CASA must know the array: ``telescope.casa_name`` and DSA_110."""
    ref = config.telescope.reference
    position = [ref.longitude_rad, ref.latitude_rad, ref.height_m]
    return {config.telescope.casa_name: position, "DSA_110": position}


def casa_health(config: PipelineConfig) -> dict[str, Any]:
    """Check CASA offline: measures found in the package, the array's position known.

    CASA's observatory table has no DSA_110; the array is placed through ``telescope.casa_name``
    (OVRO_MMA), whose position must agree with our array reference.
    """
    import numpy as np

    from contimg_dask.casa.tasks import measures_report
    from contimg_dask.telescope.geodesy import geodetic_to_ecef

    names = list(casa_observatories(config))
    report = run_casa(config, measures_report, names, stage="casa-check")
    ref = config.telescope.reference
    ours = geodetic_to_ecef(ref.longitude_rad, ref.latitude_rad, ref.height_m)
    ok = "IERSeop2000" in report["iers_table"]
    for entry in report["observatories"].values():
        if entry["found"]:
            entry["offset_from_array_reference_m"] = float(
                np.linalg.norm(np.array(entry["itrf_m"]) - ours))
        ok = ok and entry["found"] and entry["offset_from_array_reference_m"] < 1.0
    report["ok"] = bool(ok)
    return report


__all__ = ["casa_health", "casa_observatories", "run_casa", "run_in_casa_process"]
