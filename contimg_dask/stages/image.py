"""The ``image`` stage: one calibrated block to FITS images a radio astronomer can trust.

1. Check the block: its data group exists, it is calibrated (or ``imaging.require_calibration``
   is false, and the products say so), not everything is flagged.
2. Export the data group as a Measurement Set (calibration applied on the fly into
   CORRECTED_DATA, rephased to the block's fixed centre, flags carried), in a temporary
   directory beside the products; in the same pass the writer averages channels within each
   subband (``imaging.channels_per_subband``) and scales each integration to hold the
   brightest catalogue source's apparent flux constant (imaging/beam_tracking.py), and adds
   the catalogue model's correction that holds the other bright catalogue sources constant
   too (imaging/drift_model.py).
3. Image with the configured engine (CASA tclean in its own process, or WSClean).
4. The drift-averaged primary beam of the (beam-tracked) data on the image grid
   (ops/primary_beam.py), the PB-corrected image blanked below ``imaging.pb_cutoff``, the
   measured noise, peak and dynamic range, provenance in every header and in a JSON
   sidecar, quick-look PNGs.
5. Everything is built under a temporary name and renamed into ``<out>/<block_id>/`` at once;
   on any failure the temporary directory (and the MS) is removed and earlier products stay.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from contimg_dask.config import PipelineConfig
from contimg_dask.config.schema import ImagingConfig
from contimg_dask.constants import SPEED_OF_LIGHT
from contimg_dask.errors import ContimgError, InputError
from contimg_dask.imaging import engines
from contimg_dask.imaging.beam_tracking import TrackedSource, tracked_source
from contimg_dask.imaging.drift_model import drift_model
from contimg_dask.imaging.products import (
    annotate,
    image_figures,
    primary_beam_plane,
    read_plane,
    write_like,
    write_sidecar,
)
from contimg_dask.io.outputs.ms_writer import write_ms
from contimg_dask.io.store.block_calibration import read_block_calibration
from contimg_dask.io.store.block_geometry import geometry_of
from contimg_dask.io.store.block_store import BASE_FIELD_NODE, block_node, open_block
from contimg_dask.io.store.data_groups import data_group
from contimg_dask.io.system.atomic import atomic_directory, register_product_kind
from contimg_dask.io.system.checksum import file_sha256
from contimg_dask.logs import get_logger
from contimg_dask.ops.primary_beam import tracked_beam_coefficients
from contimg_dask.ops.smearing import bandwidth_smearing_peak_ratio
from contimg_dask.ops.time_average import (
    TimeAveraging,
    averaging_factors,
    baseline_fringe_rates,
)
from contimg_dask.science.calibrators import find_calibrators
from contimg_dask.stages.contract import (
    BlockRef,
    Product,
    Provenance,
    StageResult,
    provenance_of,
)

if TYPE_CHECKING:
    from dask.distributed import Client

log = get_logger(__name__)

#: FITS products of a block, by kind, with their file suffixes.
FITS_KINDS = {"image": "image", "image_pbcor": "image.pbcor", "residual": "residual",
              "pb": "pb", "model": "model"}
QUICKLOOK_KINDS = ("image", "image_pbcor", "residual")


def product_directory(result_root: Path, block_id: str) -> Path:
    """Where a block's image products live: ``<root>/<block_id>/``."""
    return result_root / block_id.replace(":", "")


#: A block's image products directory, recognised by its JSON sidecar: only such a
#: directory is ever replaced by a new imaging run (io/system/atomic.py).
IMAGE_PRODUCTS = "image_products"
register_product_kind(IMAGE_PRODUCTS, lambda p: p.is_dir() and any(p.glob("*.image.json")))


def publish_directory(final: Path) -> AbstractContextManager[Path]:
    """The one place products are made atomic: build in a temporary sibling of ``final``,
    rename into place when complete (io/system/atomic.py)."""
    return atomic_directory(final, IMAGE_PRODUCTS)


class BlockSummary:
    """What the stage learns about a block before imaging it."""

    def __init__(self, block: BlockRef, config: PipelineConfig) -> None:
        cfg = config.imaging
        store = Path(block.store)
        if not store.exists():
            raise InputError("block store does not exist", file=store, block=block.block_id,
                             stage="image")
        node = block_node(open_block(store))
        ds = node.to_dataset(inherit=False)
        self.geometry = geometry_of(node, store)
        try:
            group = data_group(ds.attrs, cfg.data_group, store, stage="image",
                               key="imaging.data_group")
        except InputError as exc:
            raise InputError(exc.message, file=store, block=block.block_id, stage="image",
                             key="imaging.data_group") from None
        corrected = ds.attrs.get("data_groups", {}).get("corrected")
        calibration = read_block_calibration(node)
        self.calibrated = bool(
            (calibration is not None and calibration.data_group == cfg.data_group)
            or (corrected is not None and corrected.get("derived_from") == cfg.data_group))
        if not self.calibrated and cfg.require_calibration:
            raise InputError("block is not calibrated (no calibration applied to data group "
                             f"'{cfg.data_group}'); run `contimg calibrate apply`, or set "
                             "imaging.require_calibration: false to image it uncalibrated",
                             file=store, block=block.block_id, stage="image",
                             key="imaging.require_calibration")
        flag = ds[group.names["flag"]].data
        if flag.size == 0:
            raise InputError("block has no visibilities", file=store, block=block.block_id,
                             stage="image")
        unflagged = np.asarray((~flag).sum(axis=(0, 1, 3)).compute(), float)
        if unflagged.sum() == 0:
            raise InputError("every visibility of the block is flagged: nothing to image",
                             file=store, block=block.block_id, stage="image")
        self.flagged_fraction = 1.0 - float(unflagged.sum()) / flag.size
        slices = self.geometry.subband_slices()
        freq = self.geometry.freq_hz
        self.subband_freq_hz = np.array([freq[s].mean() for s in slices])
        self.subband_weight = np.array([unflagged[s].sum() for s in slices])
        self.reference_frequency_hz = float(np.sum(freq * unflagged) / unflagged.sum())
        self.channel_width_hz = float(abs(np.median(np.diff(freq)))) if len(freq) > 1 else (
            float(abs(ds.frequency.attrs["channel_width"]["data"])))
        field = node[BASE_FIELD_NODE].to_dataset(inherit=False)
        direction = np.asarray(field.FIELD_PHASE_CENTER_DIRECTION.values, float)
        if direction.ndim == 1:  # tracked (sidereal) pointing: one direction
            direction = np.repeat(direction[None, :], len(self.geometry.times_unix), axis=0)
        self.track_ra_rad, self.track_dec_rad = direction[:, 0], direction[:, 1]
        self.average_width = (1 if cfg.channels_per_subband is None else max(
            1, min(self.geometry.subband_chunks) // cfg.channels_per_subband))
        # the MS's spectral windows of whole subbands (ms_writer's spw_layout): tclean one
        # per subband
        self.spectral_windows = (
            spectral_window_count(self.geometry.subband_chunks, cfg.wsclean_spectral_windows)
            if cfg.engine == "wsclean" else len(self.geometry.subband_chunks))
        self.tracked = tracked_source(self.geometry, config)
        self.tracking_scale = (None if self.tracked is None
                               else self.tracked.scale(self.geometry.freq_hz))
        uvw = np.asarray(ds[group.names["uvw"]].values, np.float64)
        self.drift_model = drift_model(self.geometry, config, None if self.tracked is None
                                       else self.tracked.name, self.tracking_scale,
                                       uvw[..., 2])
        self.time_averaging = None if cfg.bda_max_loss is None else _time_averaging(
            uvw, float(ds.time.attrs["integration_time"]["data"]), float(freq.max()),
            self.field_radius_rad(cfg), cfg.bda_max_loss)
        uvw = np.abs(uvw)
        self.max_uv_lambda = float(max(uvw[..., 0].max(), uvw[..., 1].max())
                                   * freq.max() / SPEED_OF_LIGHT)
        # w-projection planes for the part of the image inside the PB cutoff (beyond it the
        # PB-corrected image is blanked)
        field_radius = self.field_radius_rad(cfg)
        self.max_w_lambda = float(uvw[..., 2].max() * freq.max() / SPEED_OF_LIGHT)
        self.wprojplanes = (cfg.wprojplanes if cfg.wprojplanes is not None else
                            engines.w_projection_planes(self.max_w_lambda, field_radius,
                                                        cfg.w_plane_phase_rad))
        largest_cell = np.degrees(1 / (2 * self.max_uv_lambda)) * 3600
        if cfg.cell_arcsec > largest_cell:
            raise InputError(
                f"imaging.cell_arcsec {cfg.cell_arcsec}\" is too coarse for the block's "
                f"longest baselines: |u| or |v| reaches {self.max_uv_lambda:.0f} wavelengths, "
                "beyond the uv grid's edge 1/(2 cell) (aliased baselines leave stripes CLEAN "
                "cannot remove); use at most "
                f"{largest_cell:.2f}\"", file=store, block=block.block_id, stage="image",
                key="imaging.cell_arcsec")
        if cfg.channels_per_subband is not None and any(
                n % cfg.channels_per_subband for n in self.geometry.subband_chunks
                if n > cfg.channels_per_subband):
            raise InputError(f"imaging.channels_per_subband {cfg.channels_per_subband} does "
                             f"not divide the subbands' {self.geometry.subband_chunks[0]} "
                             "channels", file=store, block=block.block_id, stage="image",
                             key="imaging.channels_per_subband")


    def field_radius_rad(self, cfg: ImagingConfig) -> float:
        """The radius (rad) out to which the image is used: the PB cutoff at the band's
        bottom (beyond it the PB-corrected image is blanked), or the image's corner if
        nearer."""
        return float(min(np.radians(cfg.imsize * cfg.cell_arcsec / 3600) / np.sqrt(2),
                         airy_radius_at(cfg.pb_cutoff, float(self.geometry.freq_hz.min()),
                                        self.geometry.dish_diameter_m)))


def spectral_window_count(subband_channels: Sequence[int], most: int) -> int:
    """The most spectral windows, up to ``most``, that split the subbands (their channel
    counts in frequency order) into windows of whole adjacent subbands with equal channels;
    1 (one window for the band) always does."""
    n_sub = len(subband_channels)
    for n in range(min(most, n_sub), 1, -1):
        size = n_sub // n
        if n_sub % n == 0 and len({sum(subband_channels[i:i + size])
                                    for i in range(0, n_sub, size)}) == 1:
            return n
    return 1


def _time_averaging(uvw_m: np.ndarray, interval_s: float, freq_hz: float,
                    field_radius_rad: float, max_loss: float) -> TimeAveraging:
    """Baseline-dependent time averaging keeping every baseline's fringe of a source within
    ``field_radius_rad`` at a loss ≤ ``max_loss`` at ``freq_hz`` (ops/time_average.py)."""
    rates = baseline_fringe_rates(uvw_m, interval_s, freq_hz, field_radius_rad)
    return TimeAveraging.from_factors(
        averaging_factors(rates, interval_s, max_loss, uvw_m.shape[0]), uvw_m.shape[0])


def choose_deconvolver(block: BlockRef, config: PipelineConfig) -> tuple[str, float]:
    """``imaging.deconvolver``, or for ``auto`` mtmfs when a catalogue source's block-averaged
    apparent flux reaches ``imaging.bright_source_jy`` (else hogbom). Returns the choice and
    the brightest apparent flux found (Jy)."""
    cfg = config.imaging
    if cfg.deconvolver != "auto":
        return cfg.deconvolver, float("nan")
    _, candidates, _ = find_calibrators(block.store, config)
    brightest = max((c.mean_apparent_flux_jy for c in candidates), default=0.0)
    return ("mtmfs" if brightest >= cfg.bright_source_jy else "hogbom"), float(brightest)


def reproducing_command(block: BlockRef, config: PipelineConfig, out: Path) -> str:
    """The command line that reproduces the products: ``--set`` for every ``imaging`` key that
    differs from the environment's configuration files (the configuration hash pins the
    rest)."""
    from contimg_dask.config import load_config

    sets = []
    try:
        base = load_config(environment=config.environment, environ={}).imaging.model_dump(
            mode="json")
    except ContimgError:
        base = {}
    for key, value in config.imaging.model_dump(mode="json").items():
        if base.get(key, object()) != value:
            sets.append(f"--set imaging.{key}={json.dumps(value)}")
    return " ".join(["contimg", "--env", config.environment, *sets, "image",
                     str(block.store), "--out", str(out)])


def image_block(block: BlockRef, config: PipelineConfig, out: Path | None = None,
                keep_ms: bool | None = None, command: str | None = None) -> StageResult:
    """Image one block (see the module docstring). ``out``: products root (default
    ``<paths.products>/images``); ``keep_ms``: default ``imaging.keep_ms``."""
    t0 = time.perf_counter()
    cfg = config.imaging
    root = Path(out) if out is not None else config.paths.products / "images"
    keep_ms = cfg.keep_ms if keep_ms is None else keep_ms
    if cfg.engine == "wsclean":
        engines.require_wsclean(cfg, block.block_id)
    summary = BlockSummary(block, config)
    deconvolver, brightest = choose_deconvolver(block, config)
    root.mkdir(parents=True, exist_ok=True)
    final = product_directory(root, block.block_id)
    stem = final.name
    provenance = provenance_of(config, [block.store],
                               command or reproducing_command(block, config, root))
    with publish_directory(final) as tmp:
        work = tmp / "work"
        work.mkdir(parents=True)
        t_export = time.perf_counter()
        ms = write_ms(block.store, work / f"{stem}.ms", data_group=cfg.data_group,
                      spw_layout=summary.spectral_windows,
                      telescope_casa_name=config.telescope.casa_name,
                      average_width=summary.average_width,
                      visibility_scale=summary.tracking_scale,
                      visibility_offset=None if summary.drift_model is None
                      else summary.drift_model.visibilities,
                      time_averaging=summary.time_averaging)
        export_s = time.perf_counter() - t_export
        column = "corrected" if summary.calibrated else "data"
        t_engine = time.perf_counter()
        if cfg.engine == "tclean":
            result = engines.run_tclean(config, ms, work, deconvolver,
                                        summary.reference_frequency_hz, column,
                                        summary.wprojplanes)
        else:
            result = engines.run_wsclean(config, ms, work, deconvolver == "mtmfs",
                                         "CORRECTED_DATA" if summary.calibrated else "DATA",
                                         block.block_id)
        engine_s = time.perf_counter() - t_engine
        t_products = time.perf_counter()
        figures = _write_products(tmp, stem, block, config, summary, result, deconvolver,
                                  brightest, provenance)
        products_s = time.perf_counter() - t_products
        if keep_ms:
            shutil.move(str(ms), tmp / ms.name)
        shutil.rmtree(work)
        figures.update(export_s=export_s, engine_s=engine_s, products_s=products_s,
                       **_row_figures(summary))
        figures["seconds"] = time.perf_counter() - t0
        write_sidecar(tmp / f"{stem}.image.json", {
            "block": block.to_dict(), "provenance": provenance.to_dict(), "figures": figures,
            "engine": {k: v for k, v in result.items() if k != "fits"}})
    products = [Product(kind, final / f"{stem}.{suffix}.fits",
                        file_sha256(final / f"{stem}.{suffix}.fits"))
                for kind, suffix in FITS_KINDS.items()]
    if cfg.quicklook:
        products += [Product("png", final / f"{stem}.{FITS_KINDS[k]}.png") for k in
                     QUICKLOOK_KINDS]
    products.append(Product("provenance", final / f"{stem}.image.json"))
    if keep_ms:
        products.append(Product("ms", final / f"{stem}.ms"))
    log.info("imaged block %s with %s: noise %.3g Jy/beam, peak %.3g Jy/beam, DR %.0f -> %s",
             block.block_id, cfg.engine, figures["noise_jy"], figures["peak_jy"],
             figures["dynamic_range"], final)
    return StageResult(stage="image", block_id=block.block_id, products=tuple(products),
                       provenance=provenance, figures=_flat(figures),
                       seconds=time.perf_counter() - t0)


def airy_radius_at(level: float, freq_hz: float, diameter_m: float) -> float:
    """Offset (rad) where the static Airy power beam falls to ``level`` (inside the first
    null)."""
    from scipy.optimize import brentq

    from contimg_dask.telescope.beam import SPEED_OF_LIGHT, airy_power_beam

    null = 1.2197 * SPEED_OF_LIGHT / freq_hz / diameter_m
    return float(brentq(lambda t: float(airy_power_beam(t, freq_hz, diameter_m)) - level,
                        1e-9, null))


def _row_figures(summary: BlockSummary) -> dict[str, Any]:
    """The MS's spectral windows; rows per window, before and after the time averaging, and
    its largest factor."""
    n_t = len(summary.geometry.times_unix)
    n_bl = len(summary.geometry.ant1)
    averaging = summary.time_averaging
    return {"spectral_windows": summary.spectral_windows,
            "rows_per_window_recorded": n_t * n_bl,
            "rows_per_window": n_t * n_bl if averaging is None else averaging.n_rows,
            "time_average_max_factor": 1 if averaging is None
            else int(averaging.factors.max())}


def _tracking_figures(tracked: TrackedSource | None) -> dict[str, Any]:
    """The beam-tracked source in the figures (None: no source tracked)."""
    if tracked is None:
        return {"beam_tracked_source": None}
    return {"beam_tracked_source": tracked.name,
            "beam_tracked_mean_apparent_jy": tracked.mean_apparent_flux_jy,
            "beam_tracked_ra_deg": tracked.ra_deg, "beam_tracked_dec_deg": tracked.dec_deg}


def _flat(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if isinstance(v, float | int | str | bool)
            or v is None}


def _write_products(tmp: Path, stem: str, block: BlockRef, config: PipelineConfig,
                    summary: BlockSummary, result: dict[str, Any], deconvolver: str,
                    brightest: float, provenance: Provenance) -> dict[str, Any]:
    """FITS products with headers, PB and PB correction, figures, PNGs into ``tmp``."""
    cfg = config.imaging
    image, image_header = read_plane(result["fits"]["image"])
    residual, residual_header = read_plane(result["fits"]["residual"])
    model, model_header = read_plane(result["fits"]["model"])
    tracked = summary.tracked
    pb = primary_beam_plane(image_header, summary.track_ra_rad, summary.track_dec_rad,
                            summary.subband_freq_hz, summary.subband_weight,
                            summary.geometry.dish_diameter_m, cfg.pb_grid_step_deg,
                            None if tracked is None else tracked_beam_coefficients(
                                tracked.scale(summary.subband_freq_hz)))
    pbcor = np.where(pb >= cfg.pb_cutoff, image / np.maximum(pb, 1e-12), np.nan)
    figures: dict[str, Any] = {
        "engine": cfg.engine, "engine_version": result["engine_version"],
        "deconvolver": deconvolver, "brightest_catalogue_apparent_jy": brightest,
        "calibrated": summary.calibrated, "flagged_fraction": summary.flagged_fraction,
        "reference_frequency_hz": summary.reference_frequency_hz,
        "pb_cutoff": cfg.pb_cutoff, "channel_average": summary.average_width,
        "imsize": cfg.imsize, "cell_arcsec": cfg.cell_arcsec,
        "beam_major_arcsec": float(image_header.get("BMAJ", np.nan)) * 3600,
        "beam_minor_arcsec": float(image_header.get("BMIN", np.nan)) * 3600,
        "beam_pa_deg": float(image_header.get("BPA", np.nan)),
        "threshold_sigma": cfg.threshold_sigma,
        "max_w_lambda": summary.max_w_lambda,
        "wprojplanes": summary.wprojplanes if cfg.engine == "tclean" else None,
        "model_pixels": int(np.count_nonzero(model)),
        **_tracking_figures(tracked),
        "drift_model_sources": "" if summary.drift_model is None
        else ",".join(summary.drift_model.names),
        **image_figures(image, residual, pb, cfg.pb_cutoff),
    }
    figures["pb_cutoff_radius_deg"] = float(np.degrees(airy_radius_at(
        cfg.pb_cutoff, summary.reference_frequency_hz, summary.geometry.dish_diameter_m)))
    figures["bandwidth_smearing_peak_ratio_at_pb_cutoff"] = float(
        bandwidth_smearing_peak_ratio(
            np.radians(figures["pb_cutoff_radius_deg"]),
            summary.channel_width_hz * summary.average_width, summary.reference_frequency_hz,
            np.radians(np.sqrt(figures["beam_major_arcsec"] * figures["beam_minor_arcsec"])
                       / 3600)))
    pb_header = image_header.copy()
    pb_header["BUNIT"] = ""
    planes = {"image": (image, image_header), "image_pbcor": (pbcor, image_header),
              "residual": (residual, residual_header), "pb": (pb, pb_header),
              "model": (model, model_header)}
    prov = provenance.to_dict()
    for kind, (plane, header) in planes.items():
        path = tmp / f"{stem}.{FITS_KINDS[kind]}.fits"
        write_like(path, plane, annotate(header, block.block_id, prov, figures, kind,
                                         image_header))
    if cfg.quicklook:
        from contimg_dask.imaging.quicklook import quicklook_png

        for kind in QUICKLOOK_KINDS:
            fits_path = tmp / f"{stem}.{FITS_KINDS[kind]}.fits"
            quicklook_png(fits_path, fits_path.with_suffix(".png"),
                          f"{block.block_id} {kind} ({cfg.engine}"
                          f"{'' if summary.calibrated else ', UNCALIBRATED'}): noise "
                          f"{1e3 * figures['noise_jy']:.2f} mJy/beam, image peak "
                          f"{figures['peak_jy']:.3g} Jy/beam", figures["noise_jy"])
    return figures


class ImageStage:
    """The ``image`` stage under the stage contract (see the module docstring)."""

    name: ClassVar[str] = "image"
    needs: ClassVar[tuple[str, ...]] = ("flag", "calibrate_apply")

    def __init__(self, out: Path | None = None, keep_ms: bool | None = None) -> None:
        self.out, self.keep_ms = out, keep_ms

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult:
        """Image ``block`` (``client`` unused: the engine runs in its own process)."""
        try:
            return image_block(block, config, self.out, self.keep_ms)
        except ContimgError as exc:
            if exc.block is None:
                exc.block = block.block_id
                exc.args = (exc._render(),)
            raise

