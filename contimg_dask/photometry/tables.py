"""Where forced-photometry products live, as Parquet tables under one root
(``<paths.products>/photometry`` unless given):

    measurements/<image stem>__<catalogue version>.parquet   one per measured image
    variability__<catalogue version>.parquet                 running sums, metrics, candidates
    catalogs/<name>__<version>.csv                           catalogues built from images
    lightcurves/<name>.png                                   ``contimg lightcurve --plot``

Measuring an image again with the same catalogue replaces its table (atomically: written
under a temporary name, then renamed); a light curve is the union of the measurement tables
of one catalogue version, one row per source per image. Updates of the variability table are
serialised by a file lock on the root, so stages on several workers can record epochs of
the same catalogue concurrently. The paths and the ``flags`` bits are in
photometry/layout.py (importable without pandas).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from filelock import FileLock

from contimg_dask.io.system.atomic import atomic_file, register_product_kind
from contimg_dask.photometry.layout import PhotometryLayout, photometry_root

#: Product kind of the Parquet tables (recognised by Parquet's leading magic bytes).
PHOTOMETRY_TABLE = "photometry_table"

__all__ = ["PHOTOMETRY_TABLE", "PhotometryTables", "file_starts_with", "photometry_root"]


def file_starts_with(path: Path, magic: bytes) -> bool:
    """True when ``path`` is a file whose first bytes are ``magic`` (a format's signature)."""
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(len(magic)) == magic


register_product_kind(PHOTOMETRY_TABLE, lambda p: file_starts_with(p, b"PAR1"))


class PhotometryTables(PhotometryLayout):
    """The tables under ``root`` (see the module docstring)."""

    def lock(self) -> FileLock:
        """The lock serialising updates of the variability tables."""
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / ".photometry.lock")

    def write(self, path: Path, table: pd.DataFrame) -> Path:
        """Write ``table`` to ``path`` atomically, replacing an earlier table."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, PHOTOMETRY_TABLE) as tmp:
            table.to_parquet(tmp, index=False)
        return path

    def measurements(self, version: str, names: list[str] | None = None) -> pd.DataFrame:
        """Every measurement of catalogue ``version`` (of ``names`` only, if given)."""
        files = self.measurement_files(version)
        if not files:
            return pd.DataFrame()
        filters = [("name", "in", list(names))] if names is not None else None
        return pd.concat([pd.read_parquet(f, filters=filters) for f in files],
                         ignore_index=True)

    def variability(self, version: str) -> pd.DataFrame | None:
        path = self.variability_path(version)
        return pd.read_parquet(path) if path.is_file() else None
