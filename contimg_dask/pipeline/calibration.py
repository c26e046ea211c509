"""The calibration workflow between blocks: which blocks are calibrator transits, the
solutions registry in the state store, and the wait of a target for a solve in flight.

A solve on a calibrator block registers its solutions as valid for the block's declination
strip (``calibration.dec_tolerance_deg``) from ``calibration.validity_days`` before to as long
after the block's mid-time. A target applies the newest valid solutions of its strip
(:meth:`StateStore.solutions_for`); while a calibrator block of its strip within that window
still has its solve to do, it waits, up to ``pipeline.solutions_wait_s``, rather than apply
older solutions.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass
from pathlib import Path

from contimg_dask.config import PipelineConfig
from contimg_dask.io.store.block_geometry import BlockGeometry
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.io.uvh5.discovery import TIMESTAMP_FORMAT
from contimg_dask.science.calibrators import best_calibrator, calibrator_tracks
from contimg_dask.stages.contract import StageResult
from contimg_dask.state.protocol import StateStore
from contimg_dask.state.records import DONE, FAILED, OPEN, Solutions

INGEST, SOLVE, APPLY = "ingest", "calibrate_solve", "calibrate_apply"
DAY_S = 86400.0


@dataclass(frozen=True)
class Pointing:
    """A block's pointing declination (degrees) and mid-time (Unix s)."""

    dec_deg: float
    mid_unix: float


def _pointing_of(geometry: BlockGeometry) -> Pointing:
    return Pointing(math.degrees(geometry.pointing_dec_rad), float(geometry.mid_unix))


class CalibrationWorkflow:
    """Block kinds, pointings (cached: a block store's geometry does not change) and the
    solutions registry of ``store``."""

    def __init__(self, config: PipelineConfig, store: StateStore) -> None:
        self.config, self.store = config, store
        self._pointings: dict[str, Pointing] = {}
        self._kinds: dict[str, bool] = {}

    def pointing(self, block_id: str, block_store: Path) -> Pointing:
        if block_id not in self._pointings:
            self._pointings[block_id] = _pointing_of(read_geometry(block_store))
        return self._pointings[block_id]

    def is_calibrator(self, block_id: str, block_store: Path) -> bool:
        """Whether a catalogue calibrator transits the block (its store must exist; opened
        once: the pointing comes from the same read)."""
        if block_id not in self._kinds:
            geometry = read_geometry(block_store)
            _, _, candidates = calibrator_tracks(geometry, self.config.calibration)
            # solve_in_flight compares strips by pointing: known from here on.
            self._pointings.setdefault(block_id, _pointing_of(geometry))
            self._kinds[block_id] = best_calibrator(candidates) is not None
        return self._kinds[block_id]

    def known_kind(self, block_id: str) -> bool | None:
        """Whether the block is a calibrator transit, if :meth:`is_calibrator` has decided it
        (kept until :meth:`forget`), else None."""
        return self._kinds.get(block_id)

    def forget(self, block_id: str) -> None:
        """Drop a finished block's kind and pointing (its solve, if any, is done or failed:
        no target waits for it any more), so the caches hold the blocks in progress only."""
        self._kinds.pop(block_id, None)
        self._pointings.pop(block_id, None)

    def known_calibrators(self) -> list[str]:
        return [block_id for block_id, cal in self._kinds.items() if cal]

    def _same_strip(self, a: Pointing, b: Pointing) -> bool:
        cal = self.config.calibration
        return (abs(a.dec_deg - b.dec_deg) <= cal.dec_tolerance_deg
                and abs(a.mid_unix - b.mid_unix) <= cal.validity_days * DAY_S)

    def solve_in_flight(self, block_id: str, block_store: Path) -> str | None:
        """A calibrator block of this block's strip whose solve is still to do (not done,
        not failed), or None."""
        here = self.pointing(block_id, block_store)
        for other in self.known_calibrators():
            if other == block_id or other not in self._pointings:
                continue
            status = self.store.stage_status(other, SOLVE)
            if status is not None and status.status in (DONE, FAILED):
                continue
            if self._same_strip(here, self._pointings[other]):
                return other
        return None

    def unclassified_before(self, block_id: str) -> str | None:
        """A sealed block observed before this one, within ``calibration.validity_days``,
        whose kind is not known yet (its ingest neither done nor failed), or None. It may
        be a calibrator transit of this strip: its ingest was held up by a worker that died
        with the lease (the lease expires after ``state.lease_s``), so the target waits for
        it as for a solve in flight."""
        here = dt.datetime.strptime(block_id, TIMESTAMP_FORMAT)
        window = dt.timedelta(days=self.config.calibration.validity_days)
        for block in self.store.blocks():
            other = block.block_id
            if other >= block_id or other in self._kinds or block.status == OPEN:
                continue
            if here - dt.datetime.strptime(other, TIMESTAMP_FORMAT) > window:
                continue
            status = self.store.stage_status(other, INGEST)
            if status is None or status.status not in (DONE, FAILED):
                return other
        return None

    def ready_to_apply(self, block_id: str, block_store: Path, ready_since: float,
                       now: float | None = None) -> tuple[bool, str | None]:
        """Whether the target may apply now, and the block it waits for (None: none):
        a calibrator of its strip whose solve is still to do, or an earlier block not yet
        classified."""
        waiting_for = (self.solve_in_flight(block_id, block_store)
                       or self.unclassified_before(block_id))
        if waiting_for is None:
            return True, None
        waited = (time.time() if now is None else now) - ready_since
        return waited >= self.config.pipeline.solutions_wait_s, waiting_for

    def register(self, result: StageResult, block_store: Path) -> Solutions:
        """Register the solutions a solve wrote (idempotent: the id is the block's)."""
        here = self.pointing(result.block_id, block_store)
        validity = self.config.calibration.validity_days * DAY_S
        solutions = Solutions(
            solutions_id=result.block_id, path=str(result.product("solutions").path),
            strip_dec_deg=here.dec_deg, valid_from=here.mid_unix - validity,
            valid_until=here.mid_unix + validity,
            calibrator=str(result.figures.get("calibrator")), block_id=result.block_id,
            status="valid", registered_at=time.time())
        self.store.register_solutions(solutions)
        return solutions

    def solutions_for(self, block_id: str, block_store: Path) -> Solutions | None:
        """The newest valid solutions of the block's strip whose window holds it."""
        here = self.pointing(block_id, block_store)
        return self.store.solutions_for(here.dec_deg, here.mid_unix,
                                        self.config.calibration.dec_tolerance_deg)
