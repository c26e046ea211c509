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
the same catalogue concurrently.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from filelock import FileLock

from contimg_dask.config.schema import PipelineConfig
from contimg_dask.io.system.atomic import atomic_file, register_product_kind

#: Product kind of the Parquet tables (recognised by Parquet's leading magic bytes).
PHOTOMETRY_TABLE = "photometry_table"


def file_starts_with(path: Path, magic: bytes) -> bool:
    """True when ``path`` is a file whose first bytes are ``magic`` (a format's signature)."""
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(len(magic)) == magic


register_product_kind(PHOTOMETRY_TABLE, lambda p: file_starts_with(p, b"PAR1"))


def photometry_root(config: PipelineConfig) -> Path:
    """The default root: ``<paths.products>/photometry``."""
    return config.paths.products / "photometry"


class PhotometryTables:
    """The tables under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def measurement_path(self, image_stem: str, version: str) -> Path:
        return self.root / "measurements" / f"{image_stem}__{version}.parquet"

    def variability_path(self, version: str) -> Path:
        return self.root / f"variability__{version}.parquet"

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

    def versions(self) -> list[str]:
        """Catalogue versions with a variability table, newest first."""
        files = sorted(self.root.glob("variability__*.parquet"),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        return [p.stem.partition("__")[2] for p in files]

    def measurement_files(self, version: str) -> list[Path]:
        return sorted((self.root / "measurements").glob(f"*__{version}.parquet"))

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
