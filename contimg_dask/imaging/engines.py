"""The two imaging engines behind one interface: CASA tclean (in a CASA worker process) and
WSClean (its own binary). Both image the same Measurement Set with the same size, cell,
weighting, iterations and noise-tied threshold, and leave ``image``, ``residual``, ``model``
and ``psf`` FITS files (apparent flux, no primary-beam correction) in a work directory.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

from contimg_dask.casa import run_casa
from contimg_dask.config.schema import ImagingConfig, PipelineConfig
from contimg_dask.errors import ExternalToolError

_TAIL = 2000  # characters of an engine's output quoted in errors


def w_projection_planes(max_w_lambda: float, field_radius_rad: float,
                        max_phase_rad: float) -> int:
    """The fewest w-projection planes for tclean that keep the w-term's phase error below
    ``max_phase_rad`` out to ``field_radius_rad`` from the phase centre.

    CASA spaces its planes in sqrt(|w|) (plane k at w_max k² / (N − 1)²), so neighbours are
    furthest apart at the largest |w|, 2 w_max / (N − 1); a visibility gridded with the
    nearest plane is then off by up to w_max / (N − 1) in w, a phase error of
    2π (w_max / (N − 1)) (1 − cos θ) at offset θ. ``max_w_lambda``: the block's largest |w|
    (wavelengths, top of the band)."""
    spread = 2 * math.pi * max_w_lambda * (1 - math.cos(field_radius_rad))
    return max(2, math.ceil(spread / max_phase_rad) + 1)


def tclean_parameters(cfg: ImagingConfig, deconvolver: str, reffreq_hz: float,
                      wprojplanes: int | None = None) -> dict[str, Any]:
    """tclean's arguments for ``cfg`` (Stokes I, MFS at ``reffreq_hz``, no PB model: CASA
    has none for DSA-110, the stage applies its own). ``wprojplanes``: the block's
    (:func:`w_projection_planes`); None: ``imaging.wprojplanes``, or -1 (CASA's choice) when
    that is null."""
    if wprojplanes is None:
        wprojplanes = -1 if cfg.wprojplanes is None else cfg.wprojplanes
    params: dict[str, Any] = {
        "imsize": [cfg.imsize, cfg.imsize], "cell": f"{cfg.cell_arcsec}arcsec",
        "specmode": "mfs", "stokes": "I", "reffreq": f"{reffreq_hz}Hz",
        "gridder": cfg.gridder, "wprojplanes": wprojplanes,
        "weighting": cfg.weighting, "robust": cfg.robust,
        "deconvolver": deconvolver, "gain": cfg.gain,
        # Negative: no PB normalisation or mask on the image (CASA has no DSA-110 beam; the
        # stage applies its own); its magnitude bounds the region where nsigma measures the
        # noise (-1 leaves no pixel: "No valid values to deconvolve").
        "pblimit": -0.01,
    }
    if deconvolver == "mtmfs":
        params["nterms"] = cfg.nterms
    if cfg.min_uv_lambda > 0:
        params["uvrange"] = f">{cfg.min_uv_lambda}lambda"
    if cfg.auto_mask:
        # DSA-110's PSF has ~30 % sidelobes in one block: a sidelobe threshold of 1 (x the
        # sidelobe level x peak) and small minimum regions (CASA's defaults for 12-m arrays
        # prune every region and leave a zero mask; measured).
        params.update(usemask="auto-multithresh", noisethreshold=cfg.auto_mask_sigma,
                      sidelobethreshold=1.0, lownoisethreshold=1.5, minbeamfrac=0.05,
                      negativethreshold=0.0, fastnoise=True)
    return params


def wsclean_arguments(cfg: ImagingConfig, multi_term: bool, prefix: Path,
                      datacolumn: str) -> list[str]:
    """WSClean's command line for ``cfg`` (its default w-stacking gridder is w-term correct;
    ``-auto-threshold`` ties the threshold to the noise it measures, ``-auto-mask`` grows a
    mask from peaks above ``auto_mask_sigma``; ``multi_term``: two output channels joined
    with a linear spectral fit, the counterpart of tclean's mtmfs nterms 2; with ``threads``
    of 2 or more the output channels are gridded side by side)."""
    args = [cfg.wsclean_binary, "-name", str(prefix), "-size", str(cfg.imsize),
            str(cfg.imsize), "-scale", f"{cfg.cell_arcsec}asec", "-pol", "I",
            "-niter", str(cfg.niter), "-gain", str(cfg.gain), "-mgain", str(cfg.wsclean_mgain),
            "-auto-threshold", str(cfg.threshold_sigma), "-data-column", datacolumn,
            "-j", str(cfg.threads), "-parallel-gridding", str(cfg.threads), "-use-wgridder",
            "-no-update-model-required", "-quiet"]
    if cfg.weighting == "briggs":
        args += ["-weight", "briggs", str(cfg.robust)]
    else:
        args += ["-weight", cfg.weighting]
    if cfg.auto_mask:
        args += ["-auto-mask", str(cfg.auto_mask_sigma)]
    if cfg.min_uv_lambda > 0:
        args += ["-minuv-l", str(cfg.min_uv_lambda)]
    if cfg.wsclean_baseline_averaging_lambda is not None:
        args += ["-baseline-averaging", str(cfg.wsclean_baseline_averaging_lambda)]
    if multi_term:
        args += ["-join-channels", "-channels-out", str(cfg.nterms),
                 "-fit-spectral-pol", str(cfg.nterms)]
    return args


def run_tclean(config: PipelineConfig, ms: Path, work: Path, deconvolver: str,
               reffreq_hz: float, datacolumn: str, wprojplanes: int) -> dict[str, Any]:
    """tclean in a CASA worker process (time limit ``casa.task_timeout_s``)."""
    from contimg_dask.casa.imaging import tclean_to_fits

    cfg = config.imaging
    result = run_casa(config, tclean_to_fits, str(ms), str(work),
                      tclean_parameters(cfg, deconvolver, reffreq_hz, wprojplanes), datacolumn,
                      cfg.threshold_sigma, cfg.niter, cfg.threads,
                      stage="image")
    result["fits"] = {kind: Path(path) for kind, path in result["fits"].items()}
    result["engine_version"] = f"CASA {result['casa_version']}"
    return result


def wsclean_version(binary: str) -> str:
    """The first line WSClean prints with ``--version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60,
                         check=False)
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return next((line for line in lines if "version" in line.lower()), lines[0] if lines
                else "unknown")


def require_wsclean(cfg: ImagingConfig, block_id: str) -> str:
    """The WSClean binary's path. Raises ExternalToolError (permanent: installing it is an
    operator's job) when it is not on PATH."""
    binary = shutil.which(cfg.wsclean_binary)
    if binary is None:
        raise ExternalToolError(
            f"imaging.engine is wsclean but the WSClean binary {cfg.wsclean_binary!r} is not "
            "on PATH (Debian: apt-get install wsclean)", block=block_id, stage="image",
            key="imaging.wsclean_binary", transient=False)
    return binary


def run_wsclean(config: PipelineConfig, ms: Path, work: Path, multi_term: bool,
                datacolumn: str, block_id: str) -> dict[str, Any]:
    """WSClean on ``ms``, with the same time limit as CASA. Raises ExternalToolError
    (permanent) when the binary is missing, transient when it fails or times out."""
    cfg = config.imaging
    binary = require_wsclean(cfg, block_id)
    prefix = work / "wsclean"
    args = [*wsclean_arguments(cfg, multi_term, prefix, datacolumn), str(ms)]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, cwd=work, check=False,
                              timeout=config.casa.task_timeout_s)
    except subprocess.TimeoutExpired:
        raise ExternalToolError(f"WSClean timed out after {config.casa.task_timeout_s:.0f} s",
                                block=block_id, stage="image") from None
    if proc.returncode != 0:
        raise ExternalToolError(f"WSClean failed (exit code {proc.returncode}): "
                                f"{(proc.stdout + proc.stderr)[-_TAIL:]}", block=block_id,
                                stage="image")
    stem = f"{prefix}-MFS" if multi_term else str(prefix)
    fits = {kind: Path(f"{stem}-{kind}.fits") for kind in ("image", "residual", "model", "psf")}
    missing = [str(p) for p in fits.values() if not p.exists()]
    if missing:
        raise ExternalToolError(f"WSClean wrote no {', '.join(missing)}", block=block_id,
                                stage="image")
    return {"fits": fits, "engine_version": wsclean_version(binary)}
