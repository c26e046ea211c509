"""The stage contract: what every stage takes and what it gives back.

A stage is an object with a ``name``, the names of the stages whose products it ``needs``,
and ``run(block, config, *, client=None) -> StageResult``. It is idempotent: run again on the
same inputs and configuration it produces the same products (replacing its own earlier ones
atomically). The orchestrator, the CLI and the demo call stages only through this contract;
the state store records the :class:`StageResult` as it is (``to_dict()`` is JSON-ready).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from dask.distributed import Client

    from contimg_dask.config.schema import PipelineConfig

Figure = float | int | str | bool | None

#: Packages whose versions are recorded in every product's provenance.
PROVENANCE_PACKAGES = (
    "contimg-dask", "numpy", "dask", "distributed", "xarray", "zarr", "pyuvdata",
    "astropy", "pyerfa", "python-casacore", "casatools", "casatasks", "reproject",
)


def package_versions(names: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"absent"`` for one not installed) and Python's."""
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@dataclass(frozen=True)
class BlockRef:
    """One observation block as stages see it.

    ``block_id`` is the block's ISO timestamp (``YYYY-MM-DDTHH:MM:SS``); ``store`` the path of
    its zarr block store (it may not exist yet: ingest creates it); ``files`` the raw subband
    files, needed only by ingest.
    """

    block_id: str
    store: Path
    files: tuple[Path, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"block_id": self.block_id, "store": str(self.store),
                "files": [str(f) for f in self.files]}


@dataclass(frozen=True)
class Product:
    """A product written by a stage: its ``kind`` (``block_store``, ``ms``, ``uvfits``,
    ``solutions``, ``image``, ``image_pbcor``, ``residual``, ``pb``, ``model``, ``mosaic``,
    ``noise``, ``png``, ...) and final ``path`` (already renamed into place).

    A product of many blocks (an hourly mosaic, the light-curve table of a catalogue) names
    its ``collection`` (``mosaic-2026-01-15T010000``): the run of one block's stage records
    it, but it is the collection's, one product however many blocks' runs record it again.
    ``inputs``, when given, replace the run's provenance inputs for this product (every input
    of a collection product, where the run's other products have their own)."""

    kind: str
    path: Path
    checksum: str | None = None
    collection: str | None = None
    inputs: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "checksum": self.checksum,
                "collection": self.collection,
                "inputs": None if self.inputs is None else list(self.inputs)}


def product_provenance(provenance: dict[str, Any], product: dict[str, Any]) -> dict[str, Any]:
    """The provenance recorded with ``product`` (a ``Product.to_dict()``) of a run whose
    provenance is ``provenance`` (a ``Provenance.to_dict()``): the run's, with the product's
    own inputs when it names them."""
    if product.get("inputs") is None:
        return provenance
    return {**provenance, "inputs": list(product["inputs"])}


@dataclass(frozen=True)
class Provenance:
    """What a product was made from: input paths, the configuration hash, package versions
    and, where one exists, the command line that reproduces it.

    ``config`` is the configuration itself (``config.resolved_config``: the validated
    configuration as JSON, secrets masked), carried to the state store, which keeps it once
    per hash (``StateStore.configuration(config_hash)``); ``to_dict`` holds the hash only."""

    inputs: tuple[str, ...]
    config_hash: str
    versions: dict[str, str] = field(default_factory=package_versions)
    command: str | None = None
    config: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs), "config_hash": self.config_hash,
                "versions": dict(self.versions), "command": self.command}


def provenance_of(config: PipelineConfig, inputs: Iterable[str | Path],
                  command: str | None = None) -> Provenance:
    """The provenance of a product made from ``inputs`` with ``config`` (its hash and the
    configuration itself) by ``command``."""
    from contimg_dask.config import config_hash, resolved_config

    return Provenance(inputs=tuple(str(i) for i in inputs), config_hash=config_hash(config),
                      command=command, config=resolved_config(config))


@dataclass(frozen=True)
class StageResult:
    """What one run of a stage on one block did.

    ``figures`` are the measured numbers the state store and dashboard record (seconds,
    fractions, counts, SNRs, noise in Jy/beam, ...), flat and JSON-ready; ``seconds`` is the
    stage's wall time.
    """

    stage: str
    block_id: str
    products: tuple[Product, ...]
    provenance: Provenance
    figures: dict[str, Figure] = field(default_factory=dict)
    seconds: float = 0.0
    finished_at: float = field(default_factory=time.time)

    def product(self, kind: str) -> Product:
        """The one product of ``kind`` (KeyError naming the kinds present if none)."""
        for product in self.products:
            if product.kind == kind:
                return product
        raise KeyError(f"stage {self.stage} wrote no {kind!r} product "
                       f"(kinds: {', '.join(p.kind for p in self.products) or 'none'})")

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "block_id": self.block_id,
                "products": [p.to_dict() for p in self.products],
                "provenance": self.provenance.to_dict(), "figures": dict(self.figures),
                "seconds": self.seconds, "finished_at": self.finished_at}


@runtime_checkable
class Stage(Protocol):
    """One pipeline stage (see the module docstring)."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]

    def run(self, block: BlockRef, config: PipelineConfig, *,
            client: Client | None = None) -> StageResult: ...
