"""Run CASA work in its own process, with a time limit.

Each call starts a fresh interpreter (``python -m contimg_dask.casa.process``: no state
inherited from the caller, and unlike ``multiprocessing`` it never re-imports the caller's
``__main__``), which configures CASA offline, runs one function and returns its (picklable)
result through a file. CASA's own terminal output goes to the child's stdout/stderr, kept for
error messages. A crash or a time-out of CASA never takes the calling process down; it raises
:class:`CasaError`, which is transient, so the recovery machinery may retry.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contimg_dask.errors import CasaError

_TAIL = 2000  # characters of the child's output quoted in errors


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
    name = getattr(func, "__name__", repr(func))
    with tempfile.TemporaryDirectory(prefix="contimg-casa-") as tmp:
        request, result = Path(tmp) / "request.pkl", Path(tmp) / "result.pkl"
        request.write_bytes(pickle.dumps({
            "func": func, "args": args, "kwargs": kwargs, "log_dir": str(log_dir),
            "cache_dir": str(cache_dir), "observatories": observatories}))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "contimg_dask.casa.process", str(request), str(result)],
                capture_output=True, text=True, timeout=timeout_s, check=False, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise CasaError(f"CASA call {name} timed out after {timeout_s:.0f} s",
                            stage=stage) from None
        if not result.exists():
            output = (proc.stdout + proc.stderr)[-_TAIL:]
            raise CasaError(f"CASA worker died during {name} (exit code {proc.returncode}): "
                            f"{output}", stage=stage)
        status, payload = pickle.loads(result.read_bytes())
    if status == "error":
        raise CasaError(f"CASA call {name} failed: {payload}", stage=stage)
    return payload


def _serve(request_path: Path, result_path: Path) -> None:
    """Child side: configure CASA, run the requested function, write (status, payload)."""
    try:
        request = pickle.loads(request_path.read_bytes())
        from contimg_dask.casa.environment import configure_casa

        configure_casa(Path(request["log_dir"]), Path(request["cache_dir"]),
                       request["observatories"])
        outcome = ("ok", request["func"](*request["args"], **request["kwargs"]))
    except BaseException as exc:  # report everything, including SystemExit from CASA
        outcome = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    tmp = result_path.with_suffix(".part")
    tmp.write_bytes(pickle.dumps(outcome))
    tmp.rename(result_path)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), Path(sys.argv[2]))
