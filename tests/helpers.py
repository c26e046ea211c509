"""Test helpers that tie our conventions to independent implementations."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from pyuvdata import UVData

from contimg_dask.config import PipelineConfig, load_config

SPEED_OF_LIGHT_M_S = 299792458.0  # exact, SI definition
DISH_DIAMETER_M = 4.65  # DSA-110 dish (DSA110.md)


def make_config(root: Path, **overrides: object) -> PipelineConfig:
    """The ``testing`` configuration with ``paths.root`` at ``root`` plus overrides."""
    return load_config(environment="testing", overrides={"paths.root": str(root), **overrides},
                       environ={})


def without_disk_alerts(root: Path) -> dict[str, object]:
    """Overrides dropping the ``disk_free_fraction`` alert rules, and with them the bands of
    the ``products_disk`` health line (green whatever the free space): this machine's disk
    is outside the test's control."""
    rules = make_config(root).monitoring.alerts
    return {"monitoring.alerts": [r.model_dump() for r in rules
                                  if r.metric != "disk_free_fraction"]}


def read_truth(path: Path) -> dict:
    """The JSON metadata of a simulator truth file."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["truth_json"])


def read_with_true_phase_centres(path: Path, truth: dict) -> UVData:
    """Read a simulated subband with pyuvdata and tell it the truth about its phasing.

    pyuvdata reads DSA-110 files as unprojected (zenith). Here each integration gets its true
    phase centre, apparent HA 0 / pointing dec, given to pyuvdata as an ICRS ephemeris, and
    pyuvdata recomputes the UVWs from the antenna positions for those centres.
    """
    uv = UVData.from_file(str(path), file_type="uvh5", run_check=False)
    uv.uvw_array = uv.uvw_array.astype(np.float64)  # the correlator stores float32
    jd = np.unique(uv.time_array)
    cat_id = uv._add_phase_center(
        cat_name="meridian", cat_type="ephem",
        cat_lon=np.array(truth["phase_centre_icrs_ra_rad"]),
        cat_lat=np.array(truth["phase_centre_icrs_dec_rad"]),
        cat_frame="icrs", cat_epoch=2000.0, cat_times=jd)
    uv.phase_center_id_array[:] = cat_id
    uv._clear_unused_phase_centers()
    uv._set_app_coords_helper()
    uv.set_uvws_from_antenna_positions(update_vis=False)
    return uv


def pyuvdata_uvw_per_integration(uv: UVData) -> np.ndarray:
    """pyuvdata's ``calc_uvw`` for the object's phase centres, one integration at a time.

    Calling it once per integration sidesteps a pyuvdata 3.2 shortcut: ``calc_uvw`` reuses one
    rotation for consecutive rows whose hour angle and declination are bit-identical, ignoring
    that ``frame_pa`` changes between them. For a drift scan phased to HA 0 every row has the
    same hour angle, so pyuvdata's own ``uvw_array`` is off by up to ~4 mm at some
    integrations (the apparent-to-ICRS angle changes by ~2.5 µrad per integration).
    """
    from pyuvdata.utils.phasing import calc_uvw

    out = np.empty_like(uv.uvw_array)
    location = uv.telescope.location
    for t in np.unique(uv.time_array):
        rows = uv.time_array == t
        out[rows] = calc_uvw(
            app_ra=uv.phase_center_app_ra[rows], app_dec=uv.phase_center_app_dec[rows],
            frame_pa=uv.phase_center_frame_pa[rows], lst_array=uv.lst_array[rows],
            use_ant_pos=True, antenna_positions=uv.telescope.antenna_positions,
            antenna_numbers=uv.telescope.antenna_numbers, ant_1_array=uv.ant_1_array[rows],
            ant_2_array=uv.ant_2_array[rows], telescope_lon=location.lon.rad,
            telescope_lat=location.lat.rad)
    return out


def rfi_truth(store: Path, truth_path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The simulator's injected RFI amplitude (Jy) on a block store's (time, baseline,
    frequency, pol) grid: subbands in the store's chunk order, channels ascending."""
    from contimg_dask.io.store.block_store import block_node, open_block

    prov = block_node(open_block(store)).to_dataset(inherit=False).attrs["contimg"]
    n_t, n_bl, _, n_p = shape
    out = np.zeros(shape, np.float32)
    start = 0
    with h5py.File(truth_path, "r") as f:
        for sb, n_chan in zip(prov["subbands"], prov["subband_chunks"], strict=True):
            key = f"rfi_amplitude_jy/sb{sb:02d}"
            if key in f:  # file order: channels descending
                amp = f[key][()].astype(np.float32).reshape(n_t, n_bl, n_chan, n_p)
                out[:, :, start:start + n_chan] = amp[:, :, ::-1]
            start += n_chan
    return out


def airy_power(offset_rad: np.ndarray, freq_hz: np.ndarray,
               diameter_m: float = DISH_DIAMETER_M) -> np.ndarray:
    """The power pattern of a uniformly illuminated circular aperture, written here from
    the textbook formula and scipy's Bessel function, independently of the package's beam:
    (2 J1(x) / x)² with x = π D sin(θ) ν / c, and 1 on axis."""
    from scipy.special import j1

    x = np.pi * diameter_m * np.sin(np.asarray(offset_rad, float)) * np.asarray(
        freq_hz, float) / SPEED_OF_LIGHT_M_S
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 1.0, (2 * j1(safe) / safe) ** 2)


def expected_peak(source: dict, truth: dict, freq_hz: np.ndarray) -> float:
    """Mean over integrations and channels of S(ν) · B(offset(t), ν) (natural weighting,
    equal weights): the flux the simulator applied, as a multi-frequency image sees it."""
    pointing = SkyCoord(np.array(truth["phase_centre_icrs_ra_rad"]) * u.rad,
                        np.array(truth["phase_centre_icrs_dec_rad"]) * u.rad)
    offset = SkyCoord(source["ra_deg"] * u.deg, source["dec_deg"] * u.deg).separation(
        pointing).rad
    spectrum = source["flux_jy"] * source["flux_scale"] * (
        freq_hz / source["ref_freq_hz"]) ** source["spectral_index"]
    return float(np.mean(spectrum[None, :] * airy_power(offset[:, None], freq_hz[None, :])))


def group_visibilities_of(store: Path, name: str = "rephased") -> np.ndarray:
    """A block store's data group's visibilities, stored or rotated on the fly, computed."""
    from contimg_dask.io.store.block_store import block_node, open_block
    from contimg_dask.io.store.data_groups import data_group, group_visibilities

    ds = block_node(open_block(store)).to_dataset(inherit=False)
    return np.asarray(group_visibilities(ds, data_group(ds.attrs, name)).compute())


def ms_digests(ms: Path) -> dict[str, str]:
    """SHA-256 of every column's values (and of the keywords) of every table of a Measurement
    Set. Values, not files: casacore leaves a few uninitialised padding bytes in the files of
    indirect array columns (FIELD/table.f0i, FEED/table.f0i), which differ between two writes
    of the same values."""
    import hashlib

    from casacore.tables import table

    out = {}
    names = ["", *sorted(p.name for p in ms.iterdir() if (p / "table.dat").is_file())]
    for name in names:
        with table(str(ms / name), ack=False) as t:
            keywords = {k: Path(v[7:]).name if str(v).startswith("Table: ") else v
                        for k, v in t.getkeywords().items()}  # subtables: by name
            out[f"{name or 'MAIN'}:keywords"] = hashlib.sha256(
                repr(sorted(keywords.items())).encode()).hexdigest()
            for column in t.colnames():
                if t.nrows() and t.iscelldefined(column, 0):
                    values = t.getcol(column)
                    data = (np.asarray(values).tobytes() if not isinstance(values, dict | list)
                            else repr(values).encode())
                else:
                    data = b"undefined"
                out[f"{name or 'MAIN'}:{column}"] = hashlib.sha256(data).hexdigest()
    return out
