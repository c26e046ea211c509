"""Find observation blocks among subband files (``contimg blocks INCOMING``).

Files named ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`` are grouped by their timestamps: a file joins
the current block while its timestamp is within ``timestamp_tolerance_s`` of the block's first
file. Each file's header is read (cheaply, with h5py) to check that it is a readable UVH5
file of the expected layout and that all files of a block share one time axis. Problems are
reported per file and never stop the discovery of other blocks.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py

from contimg_dask.config.schema import BlocksConfig
from contimg_dask.errors import ForeignFileError, InputError, UnreadableFileError
from contimg_dask.io.uvh5.header import parse_subband_name, read_header_axes

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class SubbandFile:
    """A subband file whose header was read successfully."""

    path: str
    subband: int
    timestamp: str
    n_times: int
    n_baselines: int
    n_freqs: int
    n_pols: int
    time_first_jd: float
    time_last_jd: float
    freq_first_hz: float
    freq_last_hz: float
    size_bytes: int


@dataclass
class FileProblem:
    """A file that cannot be used, and why."""

    path: str
    reason: str
    kind: str  # "unreadable", "foreign", "inconsistent", "duplicate"


@dataclass
class Block:
    """One observation block: its files by subband, what is missing and what is wrong."""

    block_id: str
    files: dict[int, SubbandFile] = field(default_factory=dict)
    missing_subbands: list[int] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    status: str = "complete"  # complete | incomplete | unusable
    usable: bool = True

    def to_dict(self) -> dict:
        return {
            "block_id": self.block_id,
            "status": self.status,
            "usable": self.usable,
            "n_files": len(self.files),
            "missing_subbands": self.missing_subbands,
            "files": {f"{sb:02d}": asdict(f) for sb, f in sorted(self.files.items())},
            "problems": [asdict(p) for p in self.problems],
        }


@dataclass
class Discovery:
    """The result of scanning a directory."""

    directory: str
    blocks: list[Block]
    problems: list[FileProblem]  # files not attributable to any block

    def to_dict(self) -> dict:
        return {
            "directory": self.directory,
            "blocks": [b.to_dict() for b in self.blocks],
            "problems": [asdict(p) for p in self.problems],
        }


def read_subband_header(path: Path) -> SubbandFile:
    """Read the header of one subband file and check its layout.

    Raises
    ------
    UnreadableFileError
        The file is not HDF5, is truncated, or cannot be read.
    ForeignFileError
        The name or the layout is not that of a DSA-110 subband file.
    """
    name = parse_subband_name(path)
    if name is None:
        raise ForeignFileError("name does not match YYYY-MM-DDTHH:MM:SS_sbNN.hdf5", file=path)
    try:
        with h5py.File(path, "r") as f:
            axes = read_header_axes(f, path)
            if axes.n_times <= 0 or axes.n_blts % axes.n_times:
                raise InputError(f"Nblts={axes.n_blts} is not a multiple of "
                                 f"Ntimes={axes.n_times}", file=path)
            # Touch the last visibility row: a file cut short fails here, not later.
            f["Data"]["visdata"][axes.n_blts - 1]
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise UnreadableFileError(f"cannot read HDF5: {exc}", file=path) from exc
    return SubbandFile(
        path=str(path), subband=name.subband, timestamp=name.timestamp,
        n_times=axes.n_times, n_baselines=axes.n_blts // axes.n_times, n_freqs=axes.n_freqs,
        n_pols=axes.n_pols, time_first_jd=float(axes.time_jd[0]),
        time_last_jd=float(axes.time_jd[-1]), freq_first_hz=float(axes.freq_hz[0]),
        freq_last_hz=float(axes.freq_hz[-1]), size_bytes=path.stat().st_size,
    )


def _parse_timestamp(stamp: str) -> dt.datetime:
    return dt.datetime.strptime(stamp, TIMESTAMP_FORMAT)


def nearby_block_ids(timestamp: str, tolerance_s: float) -> list[str]:
    """The block ids (file-name timestamps, 1 s resolution) that ``timestamp`` may join,
    nearest first (earlier before later at equal distance), ``timestamp`` itself first:
    the state store registers a file in the first of these that is a block
    (``StateStore.register_file_near``), as :class:`TimestampGrouper` would choose."""
    stamp = _parse_timestamp(timestamp)
    ids = [timestamp]
    for seconds in range(1, int(tolerance_s) + 1):
        for sign in (-1, 1):
            ids.append((stamp + dt.timedelta(seconds=sign * seconds)).strftime(
                TIMESTAMP_FORMAT))
    return ids


class TimestampGrouper:
    """Groups file timestamps into blocks: a timestamp joins the block whose first
    timestamp (the block id) is nearest, if that is within ``tolerance_s`` seconds either
    side, else it starts a block of its own. Given timestamps in ascending order (as
    :func:`discover_blocks` does) a file joins the current block while it is within the
    tolerance of the block's first file; given them as files arrive (the watcher), a subband
    stamped a few seconds before the block's first-seen file still joins it, and the watcher
    renames the block after it (:meth:`rename`): either way a block's id is its earliest
    file's timestamp.
    """

    def __init__(self, tolerance_s: float, block_ids: list[str] | None = None) -> None:
        self.tolerance = dt.timedelta(seconds=tolerance_s)
        self._starts = sorted(_parse_timestamp(b) for b in block_ids or [])

    def block_for(self, timestamp: str) -> str:
        """The id of the block ``timestamp`` belongs to (starting a new block if none)."""
        stamp = _parse_timestamp(timestamp)
        i = bisect.bisect_left(self._starts, stamp)
        near = [s for s in self._starts[max(i - 1, 0):i + 1]
                if abs(s - stamp) <= self.tolerance]
        if near:
            return min(near, key=lambda s: abs(s - stamp)).strftime(TIMESTAMP_FORMAT)
        self._starts.insert(i, stamp)
        return timestamp

    def rename(self, block_id: str, new_id: str) -> None:
        """The block ``block_id`` now starts at ``new_id`` (an earlier file of it arrived:
        a block is named after its earliest file, as :func:`discover_blocks` names it)."""
        self._starts.remove(_parse_timestamp(block_id))
        bisect.insort(self._starts, _parse_timestamp(new_id))


def _time_axis(f: SubbandFile) -> tuple[int, float, float]:
    # Times compared to ~0.1 ms (JD float64 resolves ~40 µs).
    return (f.n_times, round(f.time_first_jd * 86400 * 1e4), round(f.time_last_jd * 86400 * 1e4))


def _choose(block: Block, candidates: dict[int, list[SubbandFile]]) -> None:
    """Among the candidates for each subband, take the one on the block's time axis (the
    axis most candidates share); report the others. The block is named after the earliest
    file taken."""
    axes = Counter(_time_axis(f) for files in candidates.values() for f in files)
    if not axes:
        return
    reference, _ = axes.most_common(1)[0]
    ref_n, ref_t0, _ = reference
    for sb, files in sorted(candidates.items()):
        on_axis = [f for f in files if _time_axis(f) == reference]
        if on_axis:
            block.files[sb] = on_axis[0]
        for f in files:
            if on_axis and f is on_axis[0]:
                continue
            if on_axis:
                block.problems.append(FileProblem(
                    f.path, f"second file for subband {sb:02d} in block (kept: "
                    f"{Path(on_axis[0].path).name}, on the block's time axis)", "duplicate"))
            else:
                block.problems.append(FileProblem(
                    f.path, f"time axis differs from the block's: {f.n_times} integrations "
                    f"starting JD {f.time_first_jd:.8f}, block has {ref_n} starting JD "
                    f"{ref_t0 / 1e4 / 86400:.8f}", "inconsistent"))
    if block.files:
        block.block_id = min(f.timestamp for f in block.files.values())


def _assess(block: Block, config: BlocksConfig) -> None:
    """Check one block's files against each other and decide its status."""
    if block.files:
        shapes = Counter((f.n_baselines, f.n_pols) for f in block.files.values())
        ref_shape, _ = shapes.most_common(1)[0]
        for sb, f in list(block.files.items()):
            if (f.n_baselines, f.n_pols) != ref_shape:
                block.problems.append(FileProblem(
                    f.path, f"shape differs from the block's: {f.n_baselines} baselines x "
                    f"{f.n_pols} pols, block has {ref_shape[0]} x {ref_shape[1]}",
                    "inconsistent"))
                del block.files[sb]
    block.missing_subbands = [sb for sb in range(config.expected_subbands)
                              if sb not in block.files]
    n_missing = len(block.missing_subbands)
    if n_missing == 0:
        block.status, block.usable = "complete", True
    elif n_missing <= config.max_missing_subbands:
        block.status, block.usable = "incomplete", True
    else:
        block.status, block.usable = (
            "incomplete" if block.files else "unusable"), False


def discover_blocks(directory: str | Path, config: BlocksConfig) -> Discovery:
    """Scan ``directory`` for subband files and group them into blocks.

    Files with other extensions (truth files, logs) are ignored; ``.hdf5`` files with foreign
    names and unreadable files are reported with the reason.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("not a directory", file=directory)
    loose: list[FileProblem] = []
    candidates: list[tuple[dt.datetime, Path]] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix != ".hdf5" or path.name.endswith("_incomplete.hdf5"):
            continue
        name = parse_subband_name(path)
        if name is None:
            loose.append(FileProblem(str(path), "name does not match "
                                     "YYYY-MM-DDTHH:MM:SS_sbNN.hdf5", "foreign"))
            continue
        candidates.append((_parse_timestamp(name.timestamp), path))

    blocks: list[Block] = []
    per_subband: list[dict[int, list[SubbandFile]]] = []
    grouper = TimestampGrouper(config.timestamp_tolerance_s)
    for stamp, path in sorted(candidates):
        block_id = grouper.block_for(stamp.strftime(TIMESTAMP_FORMAT))
        if not blocks or blocks[-1].block_id != block_id:
            blocks.append(Block(block_id=block_id))
            per_subband.append({})
        block = blocks[-1]
        try:
            info = read_subband_header(path)
        except UnreadableFileError as exc:
            block.problems.append(FileProblem(str(path), exc.message, "unreadable"))
            continue
        except ForeignFileError as exc:
            block.problems.append(FileProblem(str(path), exc.message, "foreign"))
            continue
        except InputError as exc:
            block.problems.append(FileProblem(str(path), exc.message, "inconsistent"))
            continue
        per_subband[-1].setdefault(info.subband, []).append(info)
    for block, files in zip(blocks, per_subband, strict=True):
        _choose(block, files)
        _assess(block, config)
    return Discovery(str(directory), blocks, loose)
