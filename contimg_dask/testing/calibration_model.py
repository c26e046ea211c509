"""Our sky model as visibilities, and as an MS's MODEL_DATA for CASA's own solvers: the
reference side of calibration comparisons (tests and benchmarks only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dask.array as da
import numpy as np

from contimg_dask.config import PipelineConfig
from contimg_dask.processing.calibration_block import open_calibration_block
from contimg_dask.science.calibrators import load_calibrators
from contimg_dask.science.skymodel import (
    SourceTrack,
    model_chunk,
    path_differences,
    track_sources,
)


def model_visibilities(store: str | Path, config: PipelineConfig,
                       catalog: str | Path | None = None) -> da.Array:
    """Model visibilities of the block's ``calibration.data_group`` as a Dask array
    (time, baseline, frequency, polarization), one task per subband chunk: the catalogue's
    sources within ``model_radius_deg`` of the pointing, through the Airy beam, for the
    group's own phasing (Jy, the store's convention)."""
    block = open_calibration_block(store, config.calibration.data_group, "model")
    g = block.geometry
    _, sources = load_calibrators(config.calibration, catalog)
    tracks = track_sources(sources, g, config.calibration.model_radius_deg)
    dw = path_differences(tracks, g, np.asarray(block.dataset[block.names["uvw"]].values[..., 2]))
    vis = block.visibilities
    freq = da.from_array(g.freq_hz, chunks=(tuple(g.subband_chunks),))
    return da.map_blocks(_model_block, freq[None, None, :, None], dw=dw, tracks=tracks,
                         diameter=g.dish_diameter_m, n_pol=vis.shape[3],
                         chunks=(vis.shape[0], vis.shape[1], tuple(g.subband_chunks),
                                 vis.shape[3]), dtype=np.complex64)


def _model_block(freq: np.ndarray, dw: np.ndarray, tracks: list[SourceTrack],
                 diameter: float, n_pol: int) -> np.ndarray:
    return model_chunk(freq[0, 0, :, 0], dw, tracks, diameter, n_pol)


def write_model_column(ms: str | Path, model_of_spw: Callable[[int], np.ndarray]) -> None:
    """Add (or overwrite) MODEL_DATA of an MS we wrote (spectral-window-major rows), from
    model visibilities in the block store's convention: ``model_of_spw(s)`` returns spectral
    window s as (time, baseline, channel, polarization); the MS gets its conjugate."""
    from casacore.tables import makearrcoldesc, maketabdesc, table

    with table(str(ms), readonly=False, ack=False) as main:
        n_rows = main.nrows()
        n_spw = int(main.getcol("DATA_DESC_ID").max()) + 1
        n_chan, n_pol = main.getcell("DATA", 0).shape
        if "MODEL_DATA" not in main.colnames():
            main.addcols(maketabdesc(makearrcoldesc(
                "MODEL_DATA", 0j, shape=[n_chan, n_pol], valuetype="complex")))
        per_spw = n_rows // n_spw
        for s in range(n_spw):
            model = np.conj(np.asarray(model_of_spw(s))).reshape(per_spw, n_chan, n_pol)
            main.putcol("MODEL_DATA", model.astype(np.complex64), startrow=s * per_spw,
                        nrow=per_spw)
