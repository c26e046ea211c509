"""Simulate DSA-110 observation blocks: 16 subband UVH5 files and a truth file per block.

The sky (point sources with power-law spectra) drifts through the Airy primary beam of the
fixed dishes. Each integration is fringe-stopped at its own mid-time towards apparent hour
angle 0 and the pointing declination, so a source of flux S in apparent direction s appears as

    V = conj(g1) · g2 · S · B(s, ν) · exp(+2πi ν (w_s - w_0) / c)

with ``w = b·s``, ``b = x[ant2] - x[ant1]`` (metres) and ``w_0`` towards the phase centre.
Thermal noise follows the SEFD; RFI is added after the gains. Work is one Dask task per
subband file; a distributed ``Client``, if one is active, runs them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dask
import h5py
import numpy as np
from numpy.typing import NDArray

from contimg_dask import __version__
from contimg_dask.config.schema import PipelineConfig
from contimg_dask.constants import POLARIZATION_CODES, SPEED_OF_LIGHT
from contimg_dask.coords.frames import (
    angular_separation,
    apparent_to_icrs,
    icrs_to_apparent,
    local_apparent_sidereal_time,
)
from contimg_dask.coords.time import datetime_to_unix, unix_to_datetime, unix_to_jd
from contimg_dask.errors import InputError
from contimg_dask.logs import get_logger
from contimg_dask.ops.uvw import ecef_to_local_meridian, uvw_from_hadec, w_towards
from contimg_dask.science.calibrators import SIDEREAL_RATE_RAD_PER_S, load_calibrators
from contimg_dask.science.skymodel import PointSource, read_catalog
from contimg_dask.simulate.correlator_file import CorrelatorHeader, write_correlator_uvh5
from contimg_dask.simulate.instrument import (
    InstrumentModel,
    draw_instrument,
    perfect_instrument,
)
from contimg_dask.simulate.kernels import sum_point_sources
from contimg_dask.simulate.rfi import BlockRfi, plan_block_rfi, subband_rfi
from contimg_dask.simulate.sky import block_flux_scale, random_sky
from contimg_dask.telescope import Telescope, airy_power_beam, load_telescope

log = get_logger(__name__)

FILENAME_FORMAT = "%Y-%m-%dT%H:%M:%S"
SOURCE_CUTOFF_DEG = 10.0  # sources farther than this from the field contribute nothing


@dataclass(frozen=True)
class Faults:
    """Faults to inject, as subband numbers (applied to every simulated block)."""

    missing: frozenset[int] = frozenset()
    truncated: frozenset[int] = frozenset()
    shifted_time: frozenset[int] = frozenset()


@dataclass(frozen=True)
class SimulationOptions:
    """What to simulate. ``None`` fields take their value from the configuration."""

    preset: str = "small"
    n_blocks: int = 1
    seed: int | None = None
    start: dt.datetime | None = None
    pointing_dec_deg: float | None = None
    catalog: Path | None = None
    random_sources: bool = True
    calibrator: bool = False
    transit: str | None = None  # a calibrator catalogue source transiting block 0's middle
    noise: bool = True
    gains: bool = True
    rfi: bool = True
    positive_channel_width: bool = False
    faults: Faults = field(default_factory=Faults)


@dataclass
class BlockPlan:
    """Everything a subband task needs to compute and write its file."""

    index: int
    block_id: str
    seed: int
    unix: NDArray[np.float64]  # integration centres
    jd: NDArray[np.float64]
    integration_time_s: float
    subband_filenames: dict[int, str]
    ant1: NDArray[np.int64]  # per row (time-major)
    ant2: NDArray[np.int64]
    time_index: NDArray[np.int64]
    delay_s: NDArray[np.float64]  # (n_src, n_row)
    source_flux_jy: NDArray[np.float64]  # (n_src,) at ref freq, incl. variability
    source_ref_freq_hz: NDArray[np.float64]
    source_spectral_index: NDArray[np.float64]
    beam_offset_rad: NDArray[np.float64]  # (n_src, n_time)
    dish_diameter_m: float
    sefd_jy: float
    noise: bool
    instrument: InstrumentModel
    rfi: BlockRfi
    rfi_config: object
    header: CorrelatorHeader  # template; per-subband frequencies filled in by the task
    first_channel_hz: float
    channel_width_hz: float
    channels_per_subband: int
    faults: Faults
    truth: dict = field(default_factory=dict)

    def subband_freqs(self, subband: int) -> NDArray[np.float64]:
        start = self.first_channel_hz + subband * self.channels_per_subband * self.channel_width_hz
        return start + np.arange(self.channels_per_subband) * self.channel_width_hz


def _preset_band(config: PipelineConfig, preset: str) -> tuple[float, float, int]:
    """(first channel centre, channel width, channels per subband) of a preset: same subband
    coverage as the real band, with channels averaged when the preset asks for fewer."""
    band = config.telescope.band
    n_chan = config.simulation.presets[preset].channels_per_subband
    factor = band.channels_per_subband / n_chan
    if factor != int(factor):
        raise ValueError(f"preset '{preset}': {band.channels_per_subband} channels per subband "
                         f"are not divisible into {n_chan}")
    width = band.channel_width_hz * factor
    first = band.first_channel_hz + (factor - 1) / 2.0 * band.channel_width_hz
    return first, width, n_chan


def _select_antennas(telescope: Telescope, n_antennas: int | None) -> NDArray[np.int64]:
    """Active antennas of a preset, spread evenly over the active list (core and outriggers)."""
    active = telescope.active_antenna_numbers
    if n_antennas is None or n_antennas >= len(active):
        return active
    idx = np.unique(np.round(np.linspace(0, len(active) - 1, n_antennas)).astype(int))
    return active[idx]


def _baselines(antennas: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Upper-triangular baseline order with autocorrelations: (a0,a0), (a0,a1), ..., (a1,a1)."""
    i, j = np.triu_indices(len(antennas))
    return antennas[i], antennas[j]


def build_sky(config: PipelineConfig, options: SimulationOptions, seed: int,
              field_ra_deg: NDArray[np.float64], dec_deg: float) -> list[PointSource]:
    """The run's sky: catalogue and/or random sources, plus the calibrator if requested."""
    sources: list[PointSource] = []
    if options.catalog is not None:
        sources.extend(read_catalog(options.catalog))
    elif options.random_sources:
        ra_unwrapped = np.degrees(np.unwrap(np.radians(field_ra_deg)))
        sources.extend(random_sky(np.random.default_rng([seed, 49979687]),
                                  float(ra_unwrapped.min()), float(ra_unwrapped.max()),
                                  dec_deg, config.simulation.sky))
    if options.transit is not None:
        sources.append(_transit_source(config, options.transit))
    if options.calibrator:
        sky = config.simulation.sky
        sources.append(PointSource(
            name="SIMCAL", ra_deg=float(field_ra_deg[0]), dec_deg=float(dec_deg) + 0.2,
            flux_jy=sky.calibrator_flux_jy, ref_freq_hz=sky.reference_frequency_hz,
            spectral_index=-0.5))
    return sources


def _transit_source(config: PipelineConfig, name: str) -> PointSource:
    """The calibrator catalogue's source ``name``."""
    path, sources = load_calibrators(config.calibration)
    for source in sources:
        if source.name == name:
            return source
    raise InputError(f"no source {name!r} in the calibrator catalogue (has "
                     f"{', '.join(s.name for s in sources)})", file=path)


def _transit_start(source: PointSource, after: dt.datetime, block_s: float,
                   longitude_rad: float, latitude_rad: float, height_m: float) -> dt.datetime:
    """Start of the block whose middle is the first transit (apparent HA 0) of ``source``
    after ``after`` (to 0.1 s)."""
    site = (longitude_rad, latitude_rad, height_m)
    ra, dec = np.radians([source.ra_deg]), np.radians([source.dec_deg])

    def hour_angle(unix: float) -> float:
        jd = unix_to_jd(np.array([unix]))
        app_ra, _ = icrs_to_apparent(ra, dec, jd, *site)
        return float(local_apparent_sidereal_time(jd, longitude_rad)[0] - app_ra[0])

    t = datetime_to_unix(after) + 0.5 * block_s
    t += (-hour_angle(t)) % (2 * np.pi) / SIDEREAL_RATE_RAD_PER_S  # next transit
    for _ in range(3):  # the sidereal rate is not exactly the apparent one: refine
        t -= np.angle(np.exp(1j * hour_angle(t))) / SIDEREAL_RATE_RAD_PER_S
    return unix_to_datetime(round(t - 0.5 * block_s, 1))


def plan_blocks(config: PipelineConfig, options: SimulationOptions) -> list[BlockPlan]:
    """Compute the geometry, sky and instrument of every block (cheap; no visibilities)."""
    sim = config.simulation
    tel_cfg = config.telescope
    telescope = load_telescope(tel_cfg)
    seed = sim.seed if options.seed is None else options.seed
    start = options.start or sim.start_time
    dec_deg = sim.pointing_dec_deg if options.pointing_dec_deg is None else options.pointing_dec_deg
    if options.transit is not None:
        transit = _transit_source(config, options.transit)
        if options.pointing_dec_deg is None:
            dec_deg = transit.dec_deg
        ref = tel_cfg.reference
        start = _transit_start(transit, start, tel_cfg.integrations_per_block
                               * tel_cfg.integration_time_s, ref.longitude_rad,
                               ref.latitude_rad, ref.height_m)
    dec0 = np.radians(dec_deg)
    preset = sim.presets[options.preset]
    first_hz, width_hz, n_chan = _preset_band(config, options.preset)
    header_width = abs(width_hz) if options.positive_channel_width else width_hz
    tau = tel_cfg.integration_time_s
    n_time = tel_cfg.integrations_per_block
    n_sb = tel_cfg.band.n_subbands
    pols = np.array([POLARIZATION_CODES[p] for p in tel_cfg.polarizations])
    antennas = _select_antennas(telescope, preset.n_antennas)
    bl1, bl2 = _baselines(antennas)
    local = ecef_to_local_meridian(telescope.relative_ecef, telescope.longitude_rad)
    bl_xyz = local[bl2] - local[bl1]
    site = (telescope.longitude_rad, telescope.latitude_rad, telescope.height_m)
    start_unix = datetime_to_unix(start)

    # The sky is drawn once for the run over the strip all blocks cover.
    mids = start_unix + (np.arange(options.n_blocks) + 0.5) * sim.block_interval_s
    mid_jd = unix_to_jd(mids)
    field_ra, _ = apparent_to_icrs(local_apparent_sidereal_time(mid_jd, site[0]),
                                   np.full_like(mid_jd, dec0), mid_jd, *site)
    sources = build_sky(config, options, seed, np.degrees(field_ra), dec_deg)

    if options.gains:
        instrument = draw_instrument(seed, telescope.n_stations, len(pols), start_unix,
                                     first_hz, sim.instrument)
    else:
        instrument = perfect_instrument(telescope.n_stations, len(pols), start_unix, first_hz)
    rfi_config = sim.rfi if options.rfi else sim.rfi.model_copy(update={"enabled": False})

    applied_delays = np.round(
        np.random.default_rng([seed, 86028121]).uniform(0, 2000, (telescope.n_stations, 2)))
    header = CorrelatorHeader(
        latitude_deg=float(np.degrees(telescope.latitude_rad)),
        longitude_deg=float(np.degrees(telescope.longitude_rad)),
        altitude_m=telescope.height_m,
        telescope_name=tel_cfg.casa_name,
        instrument=tel_cfg.instrument,
        antenna_names=telescope.antenna_names,
        antenna_positions=telescope.relative_ecef,
        antenna_diameters=np.full(telescope.n_stations, telescope.dish_diameter_m),
        n_ants_data=len(antennas),
        ant_1_array=bl1,
        ant_2_array=bl2,
        uvw_float32=uvw_from_hadec(bl_xyz, 0.0, dec0).astype(np.float32),
        time_jd=np.empty(0),
        integration_time_s=tau,
        freq_hz=np.empty(0),
        channel_width_hz=header_width,
        polarizations=pols,
        phase_center_dec_rad=float(dec0),
        applied_delays_ns=applied_delays,
        fs_table="fringestopping_table.npz",
        history=f"simulated by contimg-dask {__version__} (seed {seed}, preset {options.preset})",
    )

    plans = []
    for b in range(options.n_blocks):
        block_start = start_unix + b * sim.block_interval_s
        unix = block_start + (np.arange(n_time) + 0.5) * tau
        jd = unix_to_jd(unix)
        last = local_apparent_sidereal_time(jd, site[0])
        pc_icrs_ra, pc_icrs_dec = apparent_to_icrs(last, np.full(n_time, dec0), jd, *site)

        # Keep only sources near this block's field.
        mid_ra, mid_dec = pc_icrs_ra[n_time // 2], pc_icrs_dec[n_time // 2]
        near = [s for s in sources
                if np.degrees(angular_separation(np.radians(s.ra_deg), np.radians(s.dec_deg),
                                                 mid_ra, mid_dec)) < SOURCE_CUTOFF_DEG]
        src_ra = np.radians([s.ra_deg for s in near]).reshape(-1, 1)
        src_dec = np.radians([s.dec_deg for s in near]).reshape(-1, 1)
        app_ra, app_dec = icrs_to_apparent(src_ra, src_dec, jd[None, :], *site)
        offset = angular_separation(app_ra, app_dec, last[None, :], dec0)
        # Row geometry: the phase centre is at apparent HA 0 / dec0 in every integration.
        time_index = np.repeat(np.arange(n_time), len(bl1))
        rows_xyz = np.tile(bl_xyz, (n_time, 1))
        w0 = w_towards(rows_xyz, 0.0, dec0)
        ha = last[None, :] - app_ra  # (n_src, n_time)
        w_src = w_towards(rows_xyz[None, :, :], ha[:, time_index], app_dec[:, time_index])
        delay = (w_src - w0[None, :]) / SPEED_OF_LIGHT

        scale = block_flux_scale(near, seed, b)
        jitter = np.random.default_rng([seed, 1299709, b]).uniform(
            0, sim.filename_jitter_s, n_sb)
        block_id = unix_to_datetime(block_start).strftime(FILENAME_FORMAT)
        names = {
            sb: unix_to_datetime(np.floor(block_start + jitter[sb])).strftime(FILENAME_FORMAT)
            + f"_sb{sb:02d}.hdf5"
            for sb in range(n_sb)
        }
        plan = BlockPlan(
            index=b, block_id=block_id, seed=seed, unix=unix, jd=jd, integration_time_s=tau,
            subband_filenames=names, ant1=np.tile(bl1, n_time), ant2=np.tile(bl2, n_time),
            time_index=time_index, delay_s=np.ascontiguousarray(delay),
            source_flux_jy=np.array([s.flux_jy for s in near]) * scale,
            source_ref_freq_hz=np.array([s.ref_freq_hz for s in near]),
            source_spectral_index=np.array([s.spectral_index for s in near]),
            beam_offset_rad=offset, dish_diameter_m=telescope.dish_diameter_m,
            sefd_jy=telescope.sefd_jy, noise=options.noise and sim.instrument.noise,
            instrument=instrument,
            rfi=plan_block_rfi(seed, b, n_sb, n_chan, n_time, antennas, rfi_config),
            rfi_config=rfi_config,
            header=dataclasses.replace(header, time_jd=jd), first_channel_hz=first_hz,
            channel_width_hz=width_hz, channels_per_subband=n_chan, faults=options.faults,
        )
        plan.truth = {
            "block_id": block_id,
            "block_index": b,
            "seed": seed,
            "preset": options.preset,
            "telescope": tel_cfg.name,
            "antennas": antennas.tolist(),
            "pointing_dec_rad": float(dec0),
            "phase_centre_app_ra_rad": last.tolist(),
            "phase_centre_icrs_ra_rad": pc_icrs_ra.tolist(),
            "phase_centre_icrs_dec_rad": pc_icrs_dec.tolist(),
            "time_unix": unix.tolist(),
            "noise_sigma_jy": telescope.sefd_jy / np.sqrt(2 * abs(width_hz) * tau),
            "noise": plan.noise,
            "sources": [dict(s.as_dict(), flux_scale=float(k)) for s, k in zip(near, scale,
                                                                               strict=True)],
            "rfi": {"narrowband": {str(k): v for k, v in plan.rfi.narrowband.items()},
                    "burst_integrations": plan.rfi.burst_integrations,
                    "bad_antennas": plan.rfi.bad_antennas},
            "faults": {k: sorted(v) for k, v in dataclasses.asdict(options.faults).items()},
            "files": names,
        }
        plans.append(plan)
    return plans


def _apparent_amplitudes(plan: BlockPlan, freq: NDArray[np.float64]) -> NDArray[np.float64]:
    """Beam-weighted flux density (Jy) per source, integration and channel."""
    spectrum = plan.source_flux_jy[:, None] * (
        freq[None, :] / plan.source_ref_freq_hz[:, None]) ** plan.source_spectral_index[:, None]
    beam = airy_power_beam(plan.beam_offset_rad[:, :, None], freq[None, None, :],
                           plan.dish_diameter_m)
    return np.ascontiguousarray(spectrum[:, None, :] * beam)


def subband_visibilities(plan: BlockPlan, subband: int
                         ) -> tuple[NDArray[np.complex64], NDArray[np.float16] | None]:
    """Visibilities (n_row, n_chan, n_pol) of one subband, and the RFI amplitude truth."""
    freq = plan.subband_freqs(subband)
    n_row, n_chan = len(plan.ant1), len(freq)
    n_pol = len(plan.header.polarizations)
    sky = np.zeros((n_row, n_chan), dtype=np.complex128)
    if plan.delay_s.shape[0]:
        sum_point_sources(plan.delay_s, _apparent_amplitudes(plan, freq), plan.time_index,
                          float(freq[0]), plan.channel_width_hz, sky)
    rng = np.random.default_rng([plan.seed, plan.index, subband, 3])
    auto = plan.ant1 == plan.ant2
    sigma = plan.sefd_jy / np.sqrt(2 * abs(plan.channel_width_hz) * plan.integration_time_s)
    gt = plan.instrument.time_gains(plan.unix)  # (n_ant, n_time, n_pol)
    bp = plan.instrument.bandpass(freq)  # (n_ant, n_chan, n_pol)
    vis = np.empty((n_row, n_chan, n_pol), dtype=np.complex64)
    for p in range(n_pol):
        v = sky.copy()
        v[auto] += plan.sefd_jy
        if plan.noise:
            v[~auto] += sigma * (rng.standard_normal((int((~auto).sum()), n_chan))
                                 + 1j * rng.standard_normal((int((~auto).sum()), n_chan)))
            v[auto] += np.sqrt(2) * sigma * rng.standard_normal((int(auto.sum()), n_chan))
        g1 = gt[plan.ant1, plan.time_index, p][:, None] * bp[plan.ant1, :, p]
        g2 = gt[plan.ant2, plan.time_index, p][:, None] * bp[plan.ant2, :, p]
        v *= np.conj(g1) * g2
        v[auto] = v[auto].real  # |g|^2 exactly: autocorrelations are real
        vis[..., p] = v
    rfi = subband_rfi(plan.rfi, subband, rng, plan.ant1, plan.ant2, plan.time_index, n_chan,
                      n_pol, plan.rfi_config)
    if rfi is None:
        return vis, None
    vis += rfi
    return vis, np.abs(rfi).astype(np.float16)


def write_subband(plan: BlockPlan, subband: int, out_dir: Path) -> dict:
    """Compute and write one subband file (with any fault requested). Returns its record."""
    t0 = time.perf_counter()
    vis, rfi_amp = subband_visibilities(plan, subband)
    freq = plan.subband_freqs(subband)
    header = dataclasses.replace(plan.header, freq_hz=freq)
    if subband in plan.faults.shifted_time:
        header = dataclasses.replace(header, time_jd=header.time_jd
                                     + plan.integration_time_s / 86400.0)
    path = out_dir / plan.subband_filenames[subband]
    nsamples = np.ones(vis.shape, dtype=np.float32)
    write_correlator_uvh5(path, header, vis, nsamples)
    if subband in plan.faults.truncated:
        size = path.stat().st_size
        with path.open("r+b") as handle:
            handle.truncate(int(size * 0.6))
    return {"subband": subband, "file": str(path), "seconds": time.perf_counter() - t0,
            "rfi_amplitude": rfi_amp}


def write_truth(plan: BlockPlan, out_dir: Path, records: list[dict]) -> Path:
    """Write ``<block_id>_truth.h5``: JSON metadata, gains, bandpasses and RFI amplitudes."""
    path = out_dir / f"{plan.block_id}_truth.h5"
    n_sb = len(plan.subband_filenames)
    freqs = np.concatenate([plan.subband_freqs(sb) for sb in range(n_sb)])
    with h5py.File(path, "w") as f:
        f.attrs["truth_json"] = json.dumps(plan.truth)
        f["freq_hz"] = freqs
        f["time_gains"] = plan.instrument.time_gains(plan.unix)
        f["bandpass"] = plan.instrument.bandpass(freqs)
        f["ant_1_array"] = plan.ant1
        f["ant_2_array"] = plan.ant2
        rfi = f.create_group("rfi_amplitude_jy")
        for rec in records:
            if rec["rfi_amplitude"] is not None:
                rfi.create_dataset(f"sb{rec['subband']:02d}", data=rec["rfi_amplitude"],
                                   compression="gzip", compression_opts=1, shuffle=True)
    return path


def _compute(tasks: list) -> tuple:
    """Run tasks on the active distributed Client if there is one, else on local threads."""
    try:
        from distributed import get_client

        get_client()
    except (ImportError, ValueError):
        return dask.compute(*tasks, scheduler="threads", num_workers=os.cpu_count() or 1)
    return dask.compute(*tasks)


def simulate_blocks(config: PipelineConfig, out_dir: str | Path,
                    options: SimulationOptions) -> list[dict]:
    """Simulate ``options.n_blocks`` blocks into ``out_dir``; one Dask task per subband file.

    Returns one summary per block (block id, files, truth file, seconds).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_blocks(config, options)
    summaries = []
    for plan in plans:
        t0 = time.perf_counter()
        shared = dask.delayed(plan, traverse=False)
        tasks = [
            dask.delayed(write_subband)(shared, sb, out_dir)
            for sb in sorted(plan.subband_filenames)
            if sb not in options.faults.missing
        ]
        records = _compute(tasks)
        truth = write_truth(plan, out_dir, list(records))
        seconds = time.perf_counter() - t0
        log.info("simulated block %s: %d files in %.1f s", plan.block_id, len(records), seconds)
        summaries.append({"block_id": plan.block_id, "truth": str(truth), "seconds": seconds,
                          "files": [r["file"] for r in records],
                          "n_sources": len(plan.truth["sources"])})
    return summaries
