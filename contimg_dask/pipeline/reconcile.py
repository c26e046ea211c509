"""At start-up, make the products on disk and the state store agree again.

1. Leases held by workers of this host that have died (``host:pid`` names a process that is
   gone) are given back at once, as failures ``WorkerDied`` (transient: the stage is
   requeued), rather than waiting for ``state.lease_s`` to expire.
2. Temporaries and set-aside old products left by dead writers are removed (or the old
   product restored) under the stores, products, solutions and images directories.
3. A product recorded by a done stage that is no longer on disk: the stage runs again
   (``enqueue(redo=True)``), with a ``ProductMissing`` failure recorded; every later done
   stage of the block's recipe follows, in order, once the one before it is done again
   (:func:`contimg_dask.pipeline.recipes.outdated`).
4. An orphan (a block store, Measurement Set, solutions store or image directory of a block
   the store knows, recorded by no stage, whose stage is neither done nor running: written
   by a run that died before recording it) is removed; the stage makes it again.
"""

from __future__ import annotations

import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from contimg_dask.config import PipelineConfig
from contimg_dask.errors import ContimgError
from contimg_dask.io.system.atomic import process_alive_since, recover_directory
from contimg_dask.logs import get_logger
from contimg_dask.stages.layout import block_slug, solutions_dir
from contimg_dask.state.protocol import StateStore
from contimg_dask.state.records import DONE, OPEN, RUNNING, FailureRecord, Lease

log = get_logger(__name__)

#: Where each stage's products live, by the suffix of their name (layout.py, image.py).
EXPORT_SUFFIXES = (".ms", ".uvfits", ".uv", ".uvh5")


@dataclass
class Reconciliation:
    """What reconciling did (paths as strings, (block, stage) pairs)."""

    released: list[tuple[str, str]] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    rerun: list[tuple[str, str]] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)


def _failure(block_id: str, stage: str, error: str, message: str, worker: str,
             path: str | None = None) -> FailureRecord:
    return FailureRecord(block_id=block_id, stage=stage, worker=worker, error=error,
                         message=message, transient=True, input=path,
                         traceback_digest=None, at=time.time())


class WorkerDiedError(ContimgError):
    """The worker holding a lease is no longer running (found at start-up). Transient: the
    stage is requeued."""

    transient = True


def release_dead_leases(state: StateStore, done: Reconciliation) -> None:
    host = socket.gethostname()
    for status in state.stages(status=RUNNING):
        owner_host, _, pid = (status.worker or "").rpartition(":")
        if owner_host != host or not pid.isdigit() or status.token is None:
            continue
        if process_alive_since(int(pid), status.updated_at):
            continue
        lease = Lease(status.block_id, status.stage, status.worker or "", status.token,
                      status.expires_at or 0.0, status.attempts)
        error = WorkerDiedError(f"worker {status.worker} died holding the lease (token "
                           f"{status.token}); found at start-up")
        try:
            state.fail(lease, error)
        except Exception as exc:  # the lease moved on meanwhile: nothing to release
            log.info("lease of %s on %s/%s not released: %s", status.worker,
                     status.block_id, status.stage, exc)
            continue
        done.released.append((status.block_id, status.stage))


def remove_leftovers(config: PipelineConfig, done: Reconciliation) -> None:
    paths = config.paths.resolved()
    images = paths.products / "images"
    directories = [paths.stores, paths.products, solutions_dir(config), images]
    if images.is_dir():
        directories += [d for d in images.iterdir() if d.is_dir()]
    for directory in directories:
        done.leftovers += [str(p) for p in recover_directory(directory)]


def _product_paths(result: dict | None) -> list[str]:
    return [p["path"] for p in (result or {}).get("products", [])]


def rerun_missing(state: StateStore, block_id: str, recipe: list[str], worker: str,
                  done: Reconciliation) -> None:
    statuses = {s.stage: s for s in state.stages(block_id)}
    missing_from = None
    for index, stage in enumerate(recipe):
        status = statuses.get(stage)
        if status is None or status.status != DONE:
            continue
        gone = [p for p in _product_paths(status.result) if not Path(p).exists()]
        if gone:
            state.record_failure(_failure(
                block_id, stage, "ProductMissing", f"recorded product {gone[0]} is no "
                "longer on disk: the stage and the later ones run again", worker, gone[0]))
            missing_from = index
            break
    if missing_from is not None and state.enqueue(block_id, recipe[missing_from], redo=True):
        done.rerun.append((block_id, recipe[missing_from]))


def _candidates(config: PipelineConfig, block_id: str) -> dict[str, list[Path]]:
    paths = config.paths.resolved()
    slug = block_slug(block_id)
    return {
        "ingest": [paths.stores / f"{slug}.zarr"],
        "export": [paths.products / f"{slug}{suffix}" for suffix in EXPORT_SUFFIXES],
        "calibrate_solve": [solutions_dir(config) / f"{slug}.zarr"],
        "image": [paths.products / "images" / block_id.replace(":", "")],
    }


def remove_orphans(state: StateStore, config: PipelineConfig, block_id: str,
                   done: Reconciliation) -> None:
    recorded = {Path(p.path) for p in state.products(block_id)}
    statuses = {s.stage: s.status for s in state.stages(block_id)}
    for stage, paths in _candidates(config, block_id).items():
        if statuses.get(stage) in (DONE, RUNNING):
            continue
        for path in paths:
            if not path.exists() or any(r == path or path in r.parents for r in recorded):
                continue
            log.warning("removing %s: an orphan product of block %s (stage %s %s, never "
                        "recorded)", path, block_id, stage, statuses.get(stage, "not queued"))
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            done.orphans.append(str(path))


def reconcile(state: StateStore, config: PipelineConfig, stage_order: list[str],
              worker: str) -> Reconciliation:
    """All four steps (see the module docstring); ``stage_order``: the stages of the
    recipes in order (a block's stages that are not in its recipe are simply absent)."""
    done = Reconciliation()
    release_dead_leases(state, done)
    remove_leftovers(config, done)
    for block in state.blocks():
        if block.status == OPEN:
            continue
        rerun_missing(state, block.block_id, stage_order, worker, done)
        remove_orphans(state, config, block.block_id, done)
    if done.released or done.leftovers or done.rerun or done.orphans:
        log.warning("reconciled: %d leases of dead workers released, %d leftovers removed, "
                    "%d stages to run again (products missing), %d orphans removed",
                    len(done.released), len(done.leftovers), len(done.rerun),
                    len(done.orphans))
    return done
