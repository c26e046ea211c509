"""Science test of the data path: off-centre sources land where they are on the sky.

A block with point sources up to 1.5 deg from the phase centre is simulated, ingested,
rephased, exported to a Measurement Set and imaged with CASA tclean (w-projection). Every
source must come out within 1/5 of the synthesised beam of its true ICRS position, with its
peak within 5 % of the flux the simulator put in (the source's spectrum times the Airy beam,
averaged over the block's integrations and channels). A sign, frame or w-term error moves
or smears such sources (DSA110.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from contimg_dask.casa import run_casa
from contimg_dask.io.ingest import ingest_block
from contimg_dask.io.outputs.exports import export_block
from contimg_dask.io.store.block_store import block_node, open_block
from contimg_dask.pipeline.rephase import rephase_block
from contimg_dask.science.skymodel import PointSource, write_catalog
from contimg_dask.simulate import SimulationOptions, plan_blocks, simulate_blocks
from contimg_dask.testing.casa_tasks import tclean_and_fit
from tests.helpers import expected_peak, make_config, read_truth

pytestmark = [pytest.mark.slow, pytest.mark.casa]

# (east offset deg, north offset deg, flux Jy at 1.4 GHz) from the block's mid-time centre.
OFFSETS = [(0.0, 0.0, 3.0), (1.5, 0.0, 2.0), (-0.9, 0.6, 2.5), (0.3, -1.2, 4.0),
           (-0.5, -0.7, 1.5)]


def test_off_centre_sources_image_at_their_true_positions(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"simulation.presets.small.n_antennas": 48})
    options = SimulationOptions(preset="small", random_sources=False, noise=False,
                                gains=False, rfi=False)
    centre = plan_blocks(config, options)[0].truth
    ra0 = np.degrees(np.mean(centre["phase_centre_icrs_ra_rad"][11:13]))
    dec0 = np.degrees(np.mean(centre["phase_centre_icrs_dec_rad"]))
    sources = [PointSource(f"S{i}", ra0 + dx / np.cos(np.radians(dec0)), dec0 + dy, flux,
                           1.4e9, -0.7) for i, (dx, dy, flux) in enumerate(OFFSETS)]
    write_catalog(sources, tmp_path / "sky.csv")
    (summary,) = simulate_blocks(config, tmp_path / "incoming",
                                 dataclasses.replace(options, catalog=tmp_path / "sky.csv"))
    truth = read_truth(Path(summary["truth"]))

    store = ingest_block([Path(f) for f in summary["files"]], tmp_path / "block.zarr", config)
    ra, dec = rephase_block(store)
    ms = export_block(store, tmp_path / "block.ms", "ms", config)

    regions = [f"centerbox[[{s.ra_deg}deg, {s.dec_deg}deg], [120arcsec, 120arcsec]]"
               for s in sources]
    params = {"imsize": [1536, 1536], "cell": "8arcsec", "gridder": "wproject",
              "wprojplanes": -1, "weighting": "natural", "niter": 2000, "threshold": "1mJy",
              "specmode": "mfs", "stokes": "I", "deconvolver": "hogbom", "pblimit": -1,
              "phasecenter": f"ICRS {np.degrees(ra)}deg {np.degrees(dec)}deg"}
    result = run_casa(config, tclean_and_fit, str(ms), str(tmp_path / "image"),
                      str(tmp_path / "image.fits"), regions, params)
    beam_arcsec = result["beam"]["minor_arcsec"]
    assert 20 < beam_arcsec < 120

    freq = block_node(open_block(store)).to_dataset(inherit=False).frequency.values
    by_name = {s["name"]: s for s in truth["sources"]}
    for source, fit in zip(sources, result["fits"], strict=True):
        assert fit["converged"], source.name
        true = SkyCoord(source.ra_deg * u.deg, source.dec_deg * u.deg)
        found = SkyCoord(fit["ra_rad"] * u.rad, fit["dec_rad"] * u.rad)
        assert true.separation(found).arcsec < beam_arcsec / 5, source.name
        expected = expected_peak(by_name[source.name], truth, freq)
        assert fit["peak_jy_per_beam"] == pytest.approx(expected, rel=0.05), source.name
