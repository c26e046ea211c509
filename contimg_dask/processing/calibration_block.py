"""A block store opened for calibration: the data group worked on and the block's geometry."""

from __future__ import annotations

from pathlib import Path

from contimg_dask.io.store.block_view import BlockView, open_block_view

#: The view calibration works on (see :class:`contimg_dask.io.store.block_view.BlockView`).
CalibrationBlock = BlockView


def open_calibration_block(store: str | Path, data_group_name: str, stage: str
                           ) -> CalibrationBlock:
    """Open ``store`` lazily with its data group ``data_group_name`` and geometry.

    Raises
    ------
    InputError
        The store is not a block store, or lacks the data group (not rephased yet).
    """
    return open_block_view(store, data_group_name, stage=stage, key="calibration.data_group")
