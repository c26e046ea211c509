"""Run CASA work in its own process, with a time limit.

Each call spawns a fresh Python process (``spawn``, not ``fork``: no inherited state), which
configures CASA offline, runs one function and returns its (picklable) result. A crash or a
time-out of CASA never takes the calling process down; it raises :class:`CasaError`, which is
transient, so the recovery machinery may retry.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contimg_dask.errors import CasaError


def _child(conn: Any, func: Callable[..., Any], args: tuple, kwargs: dict, log_dir: str,
           cache_dir: str, observatories: dict[str, list[float]]) -> None:
    try:
        from contimg_dask.casa.environment import configure_casa

        configure_casa(Path(log_dir), Path(cache_dir), observatories)
        conn.send(("ok", func(*args, **kwargs)))
    except BaseException as exc:  # report everything, including SystemExit from CASA
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run_in_casa_process(func: Callable[..., Any], *args: Any, log_dir: Path, cache_dir: Path,
                        observatories: dict[str, list[float]], timeout_s: float,
                        stage: str | None = None, **kwargs: Any) -> Any:
    """Run ``func(*args, **kwargs)`` in a fresh CASA worker process and return its result.

    ``func`` must be a module-level function (it is pickled by reference). ``observatories``
    (name to WGS84 ``[lon_rad, lat_rad, height_m]``) are registered in CASA's table.

    Raises
    ------
    CasaError
        If the function raised, the process died, or ``timeout_s`` passed.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, func, args, kwargs, str(log_dir),
                                            str(cache_dir), observatories), daemon=False)
    proc.start()
    child.close()
    name = getattr(func, "__name__", repr(func))
    try:
        if not parent.poll(timeout_s):
            proc.kill()
            raise CasaError(f"CASA call {name} timed out after {timeout_s:.0f} s", stage=stage)
        try:
            status, payload = parent.recv()
        except EOFError:
            proc.join(5)
            raise CasaError(f"CASA worker died during {name} (exit code {proc.exitcode})",
                            stage=stage) from None
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        parent.close()
    if status == "error":
        raise CasaError(f"CASA call {name} failed: {payload}", stage=stage)
    return payload
