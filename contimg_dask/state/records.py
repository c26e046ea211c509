"""The records the state store keeps, as plain frozen dataclasses (JSON-ready via
``to_dict``). Times are Unix seconds (UTC); on Redis, lease times come from the server's
clock so that hosts with skewed clocks agree on expiry."""

from __future__ import annotations

import dataclasses
import hashlib
import traceback
from dataclasses import dataclass
from typing import Any, Literal

from contimg_dask.errors import ContimgError

#: Stage status values. ``pending``: waiting to be claimed; ``running``: leased to a worker;
#: ``done``: completed with a result; ``failed``: permanently failed or out of attempts.
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
STAGE_STATUSES = (PENDING, RUNNING, DONE, FAILED)

#: Block status values: ``open`` (files still arriving), ``complete`` (all expected files),
#: ``partial`` (sealed at its deadline with fewer files).
OPEN, COMPLETE, PARTIAL = "open", "complete", "partial"

#: Metric rates: raw samples, 1-minute averages, per-block averages.
MetricRate = Literal["raw", "minute", "block"]
MINUTE_S = 60


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Lease(_Record):
    """The right to run ``stage`` on ``block_id`` until ``expires_at``. ``token`` is the
    fencing token: store-wide, strictly increasing with every claim."""

    block_id: str
    stage: str
    worker: str
    token: int
    expires_at: float
    attempt: int


@dataclass(frozen=True)
class StageStatus(_Record):
    """Where one stage of one block stands. ``result`` is the StageResult's ``to_dict()``
    once done; ``error`` the last failure's record."""

    block_id: str
    stage: str
    status: str
    attempts: int
    token: int | None
    worker: str | None
    expires_at: float | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    updated_at: float


@dataclass(frozen=True)
class BlockRecord(_Record):
    block_id: str
    status: str
    n_files: int
    first_seen: float
    sealed_at: float | None


@dataclass(frozen=True)
class FileRecord(_Record):
    path: str
    block_id: str
    subband: int | None
    registered_at: float


@dataclass(frozen=True)
class ProductRecord(_Record):
    """A product as a stage reported it, with the stage's provenance and the fencing token
    of the run that made it. ``block_id`` is the block whose stage run recorded it;
    ``collection`` names the product's collection when it is not that block's own (an
    hourly mosaic, a light-curve table: ``stages.contract.Product``)."""

    block_id: str
    stage: str
    kind: str
    path: str
    checksum: str | None
    provenance: dict[str, Any]
    token: int
    recorded_at: float
    collection: str | None = None


@dataclass(frozen=True)
class FailureRecord(_Record):
    """One classified failure: ``error`` is the exception class, ``transient`` whether a
    retry may help, ``input`` the file or store concerned, ``traceback_digest`` a short hash
    of the traceback's frames (equal digests: the same failure)."""

    block_id: str | None
    stage: str | None
    worker: str | None
    error: str
    message: str
    transient: bool
    input: str | None
    traceback_digest: str | None
    at: float

    @classmethod
    def from_exception(cls, exc: BaseException, *, block_id: str | None, stage: str | None,
                       worker: str | None, at: float, input: str | None = None
                       ) -> FailureRecord:
        """Classify ``exc``: a ContimgError carries its own ``transient`` flag and file;
        anything else (a bug, an unexpected library error) is recorded as permanent."""
        transient = exc.transient if isinstance(exc, ContimgError) else False
        if input is None and isinstance(exc, ContimgError):
            input = exc.file
        message = exc.message if isinstance(exc, ContimgError) else str(exc)
        return cls(block_id=block_id, stage=stage, worker=worker, error=type(exc).__name__,
                   message=message, transient=transient, input=input,
                   traceback_digest=traceback_digest(exc), at=at)


def traceback_digest(exc: BaseException) -> str | None:
    """12 hex digits identifying where ``exc`` was raised (file, function and line of each
    frame, not the message), so that repeats of one failure group together."""
    if exc.__traceback__ is None:
        return None
    frames = traceback.extract_tb(exc.__traceback__)
    text = type(exc).__name__ + "".join(f"|{f.filename}:{f.name}:{f.lineno}" for f in frames)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Solutions(_Record):
    """A calibration solutions store in the registry: valid for blocks of the strip at
    ``strip_dec_deg`` (pointing declination, degrees) observed between ``valid_from`` and
    ``valid_until`` (Unix s). ``status``: ``solving`` while being made (never handed out),
    ``valid``, or ``retired``."""

    solutions_id: str
    path: str
    strip_dec_deg: float
    valid_from: float
    valid_until: float
    calibrator: str | None
    block_id: str | None
    status: str
    registered_at: float


@dataclass(frozen=True)
class Event(_Record):
    """One entry of the event log. ``id`` is opaque (a stream id on Redis, a row number on
    SQLite) and ordered within one store."""

    id: str
    kind: str
    data: dict[str, Any]
    at: float


@dataclass(frozen=True)
class MetricSample(_Record):
    """One monitor-point sample: ``value`` of ``name`` at ``at`` (Unix s), optionally
    attributed to a block (for the per-block averages)."""

    name: str
    value: float
    at: float
    block_id: str | None = None


@dataclass(frozen=True)
class MetricPoint(_Record):
    """One point of a metric series. ``key``: the sample time (raw), the minute's start
    (Unix s, minute rate) or the block id (block rate)."""

    name: str
    key: float | str
    mean: float
    min: float
    max: float
    count: int
