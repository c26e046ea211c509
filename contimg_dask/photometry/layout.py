"""Where the forced-photometry tables live and what their ``flags`` column means, without
pandas: the dashboard's light-curve reader (photometry/light_curves.py) uses it to find the
tables, and the dashboard process must not carry the photometry stack. The tables
themselves are read and written by photometry/tables.py.

    measurements/<image stem>__<catalogue version>.parquet   one per measured image
    variability__<catalogue version>.parquet                 running sums, metrics, candidates
"""

from __future__ import annotations

from pathlib import Path

from contimg_dask.config.schema import PipelineConfig

#: Flags of a measurement (bits of the ``flags`` column).
FLAG_UPPER_LIMIT = 1
FLAG_EPOCH_UNNORMALISED = 2  # too few valid references: no normalised flux
FLAG_NOT_MEASURED = 4  # centre pixel blanked or without noise


def photometry_root(config: PipelineConfig) -> Path:
    """The default root: ``<paths.products>/photometry``."""
    return config.paths.products / "photometry"


class PhotometryLayout:
    """The table paths under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def measurement_path(self, image_stem: str, version: str) -> Path:
        return self.root / "measurements" / f"{image_stem}__{version}.parquet"

    def variability_path(self, version: str) -> Path:
        return self.root / f"variability__{version}.parquet"

    def versions(self) -> list[str]:
        """Catalogue versions with a variability table, newest first."""
        files = sorted(self.root.glob("variability__*.parquet"),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        return [p.stem.partition("__")[2] for p in files]

    def measurement_files(self, version: str) -> list[Path]:
        return sorted((self.root / "measurements").glob(f"*__{version}.parquet"))
