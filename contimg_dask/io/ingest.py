"""Ingest an observation block: UVH5 subband files to the MSv4 zarr block store.

The headers (small) are read and cross-checked up front; the store's structure is written,
then each subband is read and written into its own frequency chunk by one Dask task, all
under a temporary name, renamed when complete. Subbands missing within
``blocks.max_missing_subbands`` become flagged chunks with zero weight and are recorded.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numba
import numpy as np
import zarr
from numpy.typing import NDArray

from contimg_dask import __version__
from contimg_dask.config import PipelineConfig, config_hash
from contimg_dask.coords.time import jd_to_unix
from contimg_dask.errors import IncompleteBlockError, InconsistentBlockError, InputError
from contimg_dask.io.store.block_store import (
    antenna_dataset,
    field_ephemeris_dataset,
    field_static_dataset,
    msv4_name,
    quiet_zarr_strings,
    store_encoding,
    visibility_dataset,
    with_rephased,
    write_processing_set,
)
from contimg_dask.io.uvh5.header import subband_number
from contimg_dask.io.uvh5.reader import UVH5Meta, read_uvh5_meta, read_uvh5_visibilities
from contimg_dask.logs import get_logger, log_context
from contimg_dask.ops.phasing import (
    block_centre,
    phase_centres,
    rotate_by_path_difference,
    uvw_to_fixed_centre,
    uvw_towards,
)
from contimg_dask.ops.uvw import ecef_to_local_meridian
from contimg_dask.telescope.geodesy import geodetic_to_ecef

log = get_logger(__name__)
TIME_TOLERANCE_DAYS = 1e-3 / 86400  # 1 ms


@dataclass(frozen=True)
class Chunk:
    """One frequency chunk of the store: a subband file, or a gap left by a missing one."""

    subband: int
    freq_hz: NDArray[np.float64]  # ascending
    meta: UVH5Meta | None  # None for a gap


def _check_consistent(metas: list[UVH5Meta], block: str) -> None:
    ref = metas[0]
    for meta in metas[1:]:
        def fail(what: str, meta: UVH5Meta = meta) -> None:
            raise InconsistentBlockError(
                f"{what} differs from {Path(ref.path).name}: files from different blocks "
                "or instruments cannot be ingested together", file=meta.path, block=block,
                stage="ingest")
        if meta.n_times != ref.n_times or np.max(np.abs(meta.times_jd - ref.times_jd)) > \
                TIME_TOLERANCE_DAYS:
            fail(f"time axis ({meta.n_times} integrations from JD {meta.times_jd[0]:.8f})")
        if not (np.array_equal(meta.ant1, ref.ant1) and np.array_equal(meta.ant2, ref.ant2)):
            fail("baseline list")
        if not np.array_equal(meta.polarizations, ref.polarizations):
            fail("polarizations")
        if len(meta.freq_hz) != len(ref.freq_hz):
            fail(f"channel count ({len(meta.freq_hz)})")
        if meta.phase_centre != ref.phase_centre:
            fail("phase centre")
        if not np.allclose(meta.antenna_positions, ref.antenna_positions, atol=1e-3):
            fail("antenna positions")
        if meta.telescope_name != ref.telescope_name:
            fail(f"telescope ({meta.telescope_name})")


def plan_chunks(files: list[Path], metas: list[UVH5Meta], config: PipelineConfig,
                block: str) -> tuple[list[Chunk], list[int]]:
    """Frequency chunks in ascending frequency, with gaps for missing subbands."""
    named = [subband_number(p) for p in files]
    numbers = [i if n is None else n for i, n in enumerate(named)]
    if len(set(numbers)) != len(numbers):
        dup = sorted({n for n in numbers if numbers.count(n) > 1})
        raise InconsistentBlockError(f"subbands {dup} given twice", block=block, stage="ingest")
    by_number = dict(zip(numbers, metas, strict=True))
    missing: list[int] = []
    if None not in named:
        expected = config.blocks.expected_subbands
        missing = [n for n in range(expected) if n not in by_number]
        if len(missing) > config.blocks.max_missing_subbands:
            raise IncompleteBlockError(
                f"{len(missing)} subbands missing ({', '.join(f'{m:02d}' for m in missing)}); "
                f"at most {config.blocks.max_missing_subbands} allowed", block=block,
                stage="ingest")
    # Subband spacing in frequency, from the files present (subband n+1 is one step away).
    ref_n, ref = min(by_number.items())
    n_chan = len(ref.freq_hz)
    step = np.median(np.diff(ref.freq_hz)) if n_chan > 1 else ref.channel_width_hz[0]
    chunks = []
    for n in sorted(set(numbers) | set(missing)):
        meta = by_number.get(n)
        freq = (meta.freq_hz if meta is not None
                else ref.freq_hz + (n - ref_n) * n_chan * step)
        chunks.append(Chunk(n, np.sort(freq), meta))
    chunks.sort(key=lambda c: c.freq_hz[0])
    all_freq = np.concatenate([c.freq_hz for c in chunks])
    if np.any(np.diff(all_freq) <= 0):
        raise InconsistentBlockError("subband frequencies overlap or repeat", block=block,
                                     stage="ingest")
    return chunks, missing


@numba.njit(nogil=True, cache=True)
def flag_nonfinite(vis: np.ndarray, flags: np.ndarray) -> int:
    """Flag and zero, in place, the complex values of ``vis`` with a NaN or infinite part
    (``flags`` has ``vis``'s shape); returns how many (one pass, no temporaries)."""
    n = 0
    values = vis.reshape(-1)
    flagged = flags.reshape(-1)
    for i in range(values.size):
        if not (math.isfinite(values[i].real) and math.isfinite(values[i].imag)):
            values[i] = 0.0
            flagged[i] = True
            n += 1
    return n


def _read_chunk(meta: UVH5Meta) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One subband's (vis, flag, weight), frequency ascending, and how many non-finite
    visibilities (NaN or Inf) it had: those are flagged, zeroed and weighted zero."""
    # The task writes the arrays and drops them: read into reused buffers (io/system/scratch.py).
    vis, flags, nsamples = read_uvh5_visibilities(meta, ascending=True, reuse_buffers=True)
    nonfinite = flag_nonfinite(vis, flags)
    if nonfinite:
        log.warning("%d of %d visibilities are not finite (NaN or Inf): flagged", nonfinite,
                    vis.size)
    nsamples[flags] = 0.0  # the weight of a flagged visibility is zero
    return vis, flags, nsamples, nonfinite


def _write_chunk(meta: UVH5Meta | None, group: Path, channels: slice,
                 shape: tuple[int, ...], rephase: tuple[np.ndarray, ...] | None) -> int:
    """Task: read one subband (or make its gap) and write it into the store's zarr arrays;
    with ``rephase = (w_new - w_old, freq_hz)`` also its rephased visibilities.

    Chunk-aligned writes: each task owns its frequency chunk, so tasks never touch the same
    zarr chunk and no data travel between Dask workers. Returns the number of non-finite
    visibilities flagged.
    """
    nonfinite = 0
    if meta is None:
        vis, flag, weight = (np.zeros(shape, np.complex64), np.ones(shape, bool),
                             np.zeros(shape, np.float32))
    else:
        with log_context(stage="ingest", file=Path(meta.path).name):
            vis, flag, weight, nonfinite = _read_chunk(meta)
    arrays = [("VISIBILITY", vis), ("FLAG", flag), ("WEIGHT", weight)]
    if rephase is not None:
        arrays.append(("VISIBILITY_REPHASED", rotate_by_path_difference(vis, *rephase)))
    for name, values in arrays:
        # write_empty_chunks: skip zarr's scan for chunks equal to the fill value (3x faster
        # on a subband; every chunk is written anyway).
        array = zarr.open_array(group / name, mode="r+", config={"write_empty_chunks": True})
        array[:, :, channels, :] = values
    return nonfinite


def _record_nonfinite(group: Path, per_subband: dict[str, int]) -> None:
    """Count the flagged non-finite visibilities in the new store's provenance
    (``contimg.nonfinite_flagged``: total and per subband)."""
    node = zarr.open_group(group, mode="r+")
    contimg = dict(node.attrs["contimg"])
    contimg["nonfinite_flagged"] = {"total": sum(per_subband.values()),
                                    "per_subband": per_subband}
    node.attrs["contimg"] = contimg
    if per_subband:
        log.warning("flagged %d non-finite visibilities (subbands %s)",
                    sum(per_subband.values()), ", ".join(per_subband))
    with warnings.catch_warnings():
        quiet_zarr_strings()
        zarr.consolidate_metadata(group.parent)


def ingest_block(files: list[str | Path], out: str | Path, config: PipelineConfig,
                 block_id: str | None = None, rephase: bool | None = None,
                 overwrite: bool = False) -> Path:
    """Ingest one block's subband files into the block store ``out`` (written atomically;
    an existing block store is replaced, anything else only with ``overwrite``).

    With ``rephase`` (default: ``store.rephase_at_ingest``) the ``rephased`` data group (the
    block rephased to its default fixed centre, as ``contimg rephase`` does) is added: its
    UVWs and field, and with ``store.materialise_rephased`` its visibilities, rotated from
    the same in-memory subband in the same pass.

    Raises
    ------
    InputError (and subclasses)
        Naming the file and the problem: unreadable or truncated files, wrong shapes, files
        of different blocks, too many missing subbands. (Non-finite visibilities are flagged
        and counted in ``contimg.nonfinite_flagged``, not refused.)
    """
    t0 = time.perf_counter()
    files = [Path(f) for f in files]
    if not files:
        raise InputError("no subband files given", stage="ingest")
    block = block_id or files[0].name[:19]
    out = Path(out)
    with log_context(block=block, stage="ingest"):
        metas = [read_uvh5_meta(f) for f in files]
        _check_consistent(metas, block)
        chunks, missing = plan_chunks(files, metas, config, block)
        ref = metas[0]
        n_t, n_bl, n_p = ref.n_times, ref.n_baselines, len(ref.polarizations)

        sizes = tuple(len(c.freq_hz) for c in chunks)
        full = (n_t, n_bl, sum(sizes), n_p)
        layout = (n_t, n_bl, sizes, n_p)
        # Placeholders: they give the store its shape and chunks; the data are written by
        # one task per subband (_write_chunk), never computed from these.
        vis = da.zeros(full, chunks=layout, dtype=np.complex64)
        flag = da.zeros(full, chunks=layout, dtype=bool)
        weight = da.zeros(full, chunks=layout, dtype=np.float32)

        centre = ref.phase_centre
        site = (ref.longitude_rad, ref.latitude_rad, ref.altitude_m)
        pc = phase_centres(centre.kind, centre.dec_rad, centre.ra_rad, ref.times_jd, *site)
        local = ecef_to_local_meridian(ref.antenna_positions, ref.longitude_rad)
        index_of = {int(n): i for i, n in enumerate(ref.antenna_numbers)}
        i1 = np.array([index_of[int(a)] for a in ref.ant1])
        i2 = np.array([index_of[int(a)] for a in ref.ant2])
        uvw = uvw_towards(local[i2] - local[i1], pc["last"], pc["app_ra"], pc["app_dec"],
                          pc["frame_pa"])

        used = sorted(set(i1) | set(i2))
        names = [ref.antenna_names[i] for i in used]
        telescope_ecef = geodetic_to_ecef(*site)
        diameters = (ref.antenna_diameters[used] if ref.antenna_diameters is not None
                     else np.full(len(used), config.telescope.dish_diameter_m))
        pol_types = sorted({p[0] for p in ref.polarization_names} |
                           {p[-1] for p in ref.polarization_names})[:2]
        if len(pol_types) == 1:
            pol_types = pol_types * 2
        is_dsa = ref.telescope_name == config.telescope.casa_name and ref.instrument == \
            config.telescope.instrument
        telescope_name = config.telescope.name if is_dsa else ref.telescope_name
        field_name = f"{centre.name or 'field'}_{block}"
        all_freq = np.concatenate([c.freq_hz for c in chunks])
        unix = jd_to_unix(ref.times_jd)
        provenance = {
            "block_id": block,
            "telescope": telescope_name,
            "telescope_name_in_files": ref.telescope_name,
            "instrument": ref.instrument,
            "telescope_location_wgs84": {"longitude_rad": site[0], "latitude_rad": site[1],
                                         "height_m": site[2]},
            "phase_centre": {"kind": centre.kind, "dec_rad": centre.dec_rad,
                             "ra_rad": centre.ra_rad, "name": centre.name},
            "source_files": [str(f.resolve()) for f in files],
            "subbands": [c.subband for c in chunks],
            "subband_chunks": [len(c.freq_hz) for c in chunks],
            "missing_subbands": missing,
            "package_version": __version__,
            "config_hash": config_hash(config),
            "ingested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        vis_ds = visibility_dataset(
            unix=unix, freq_hz=all_freq, channel_width_hz=float(ref.channel_width_hz[0]),
            integration_time_s=ref.integration_time_s, polarizations=ref.polarization_names,
            ant1_names=[ref.antenna_names[i] for i in i1],
            ant2_names=[ref.antenna_names[i] for i in i2], vis=vis, flag=flag, weight=weight,
            uvw=uvw, field_name=field_name, spw_name=f"{telescope_name}_band",
            provenance=provenance)
        antenna = antenna_dataset(names, telescope_ecef + ref.antenna_positions[used],
                                  diameters, telescope_name, pol_types)
        field = field_ephemeris_dataset(unix, pc["icrs_ra"], pc["icrs_dec"], pc["app_ra"],
                                        pc["app_dec"], telescope_ecef, field_name)
        rephased_field = None
        rephase_args: list[tuple | None] = [None] * len(chunks)
        if config.store.rephase_at_ingest if rephase is None else rephase:
            ra, dec = block_centre(centre.kind, centre.dec_rad, centre.ra_rad, ref.times_jd,
                                   *site)
            uvw_new = uvw_to_fixed_centre(local[i2] - local[i1], ref.times_jd, ra, dec, *site)
            materialise = config.store.materialise_rephased
            vis_ds = with_rephased(
                vis_ds, da.zeros(full, chunks=layout, dtype=np.complex64) if materialise
                else None, uvw_new, ra, dec)
            rephased_field = field_static_dataset(ra, dec, f"rephased_{block}")
            if materialise:
                # The path differences enter the graph once, shared by every subband's task.
                dw = dask.delayed(uvw_new[..., 2] - uvw[..., 2])
                rephase_args = [(dw, c.freq_hz) for c in chunks]
        edges = np.concatenate([[0], np.cumsum(sizes)])
        t_meta = time.perf_counter()

        def fill(group: Path) -> None:
            t_data = time.perf_counter()
            tasks = [dask.delayed(_write_chunk, pure=False)(
                chunk.meta, group, slice(int(edges[i]), int(edges[i + 1])),
                (n_t, n_bl, sizes[i], n_p), rephase_args[i]) for i, chunk in enumerate(chunks)]
            nonfinite = dict(zip((f"{c.subband:02d}" for c in chunks), dask.compute(*tasks),
                                 strict=True))
            _record_nonfinite(group, {sb: n for sb, n in nonfinite.items() if n})
            log.debug("headers, phase centres and UVW %.2f s; store structure %.2f s; "
                      "subband data %.2f s", t_meta - t0, t_data - t_meta,
                      time.perf_counter() - t_data)

        zarr_chunks = (min(n_t, config.store.time_chunk_integrations), n_bl, sizes[0], n_p)
        write_processing_set(out, msv4_name(block), vis_ds, antenna, field,
                             store_encoding(zarr_chunks), fill=fill,
                             rephased_field=rephased_field, overwrite=overwrite)
        log.info("ingested %d subbands (%d missing) into %s in %.1f s", len(files),
                 len(missing), out, time.perf_counter() - t0)
    return out
