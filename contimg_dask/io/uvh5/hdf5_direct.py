"""Read uncompressed HDF5 datasets straight from their file, by their chunks' byte offsets.

h5py reads a chunked dataset chunk by chunk, at 10-30 µs of bookkeeping per chunk. The
correlator's files hold about 12 000 small uncompressed chunks per subband (complex64
visibilities in chunks of 128 x 12 values), so that bookkeeping, not the disk, sets the read
speed. Here HDF5 only says where each chunk lies (``H5Dchunk_iter``); the bytes spanning the
requested datasets' chunks are read with ``readinto`` into a buffer kept per thread, a few
MiB at a time, and a Numba kernel copies every chunk of each piece into place. The result is
bit for bit what h5py returns.

Datasets this cannot read byte for byte (filters, compound, variable-length or string types,
chunks never written, files not opened with HDF5's default driver, ...) are read by h5py.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numba
import numpy as np
from numpy.typing import NDArray

from contimg_dask.errors import UnreadableFileError
from contimg_dask.io.system.scratch import scratch

# The copy kernel handles this many axes once axes a chunk spans entirely are merged.
_KERNEL_RANK = 4
# File bytes are read this many at a time (plus the tail of the last chunk that starts in
# them): the piece stays in the CPU cache while its chunks are copied out, which measured
# 15% faster than one read of the whole span, and the pooled buffer stays small.
_WINDOW = 4 << 20
_WORD_TYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}

READ_BUFFER = "hdf5_direct_read"  # this module's scratch buffer (io/system/scratch.py)


@dataclass(frozen=True)
class DirectLayout:
    """Where the bytes of a dataset that can be read directly lie in its file.

    The dataset's axes are collapsed for the copy: an axis that every chunk spans entirely is
    merged into the axis outside it (the two then index memory and chunks alike), so
    ``grid_shape`` has at most four axes and ``chunk_index`` gives each chunk's first element
    along them.
    """

    name: str  # the dataset's path in the file, without the leading "/"
    dtype: np.dtype
    contiguous: bool
    grid_shape: tuple[int, ...]
    grid_chunk: tuple[int, ...]
    chunk_index: NDArray[np.int64]  # (n_chunks, len(grid_shape))
    byte_offset: NDArray[np.int64]  # (n_chunks,) absolute offsets in the file, ascending
    chunk_nbytes: int  # stored size of every chunk (edge chunks are stored full size)

    @property
    def start(self) -> int:
        """First byte of the dataset's data in the file."""
        return int(self.byte_offset[0])

    @property
    def end(self) -> int:
        """One past the last byte of the dataset's data in the file."""
        return int(self.byte_offset[-1]) + self.chunk_nbytes

    @property
    def single_block(self) -> bool:
        """The file holds the data exactly in memory order, in one piece."""
        return len(self.byte_offset) == 1 and self.grid_chunk == self.grid_shape


def direct_layout(dset: h5py.Dataset) -> DirectLayout | None:
    """Where ``dset``'s bytes lie in its file, or None when h5py must read it.

    A dataset is read directly when its file was opened read-only with HDF5's default
    (``sec2``) driver, it has data (no zero-length axis), its layout is contiguous or chunked
    with no filter and no external storage, its type is a plain integer, float, complex or
    bool stored exactly as NumPy holds ``dset.dtype`` (either byte order), every chunk has
    been written, and at most four axes remain once axes spanned by every chunk are merged.
    Chunks may lie in the file in any order; edge chunks are stored full size and only their
    part inside the dataset is copied. Whether the chunks lie within the file is checked
    when reading.
    """
    if dset.shape is None or dset.size == 0 or not _plain_type(dset):
        return None
    fid = dset.file.id
    if fid.get_intent() != h5py.h5f.ACC_RDONLY:  # HDF5 may hold written data not yet on disk
        return None
    if fid.get_access_plist().get_driver() != h5py.h5fd.SEC2:
        return None
    plist = dset.id.get_create_plist()
    if plist.get_nfilters() != 0 or plist.get_external_count() != 0:
        return None
    layout = plist.get_layout()
    shape = tuple(int(n) for n in dset.shape)
    if layout == h5py.h5d.CONTIGUOUS:
        if dset.id.get_storage_size() != dset.nbytes:  # never written
            return None
        chunks = shape
        index = np.zeros((1, len(shape)), np.int64)
        offsets = np.array([dset.id.get_offset()], np.int64)
    elif layout == h5py.h5d.CHUNKED:
        chunks = tuple(int(n) for n in dset.chunks)
        found = _chunk_table(dset, shape, chunks)
        if found is None:
            return None
        index, offsets = found
    else:
        return None
    grid = _collapse(shape, chunks, index)
    if grid is None:
        return None
    grid_shape, grid_chunk, grid_index = grid
    return DirectLayout(name=dset.name.lstrip("/"), dtype=dset.dtype,
                        contiguous=layout == h5py.h5d.CONTIGUOUS, grid_shape=grid_shape,
                        grid_chunk=grid_chunk, chunk_index=grid_index, byte_offset=offsets,
                        chunk_nbytes=math.prod(chunks) * dset.dtype.itemsize)


def read_dataset(dset: h5py.Dataset, out: np.ndarray | None = None) -> np.ndarray:
    """The whole of ``dset``, bit for bit what ``dset[()]`` returns (as an array).

    ``out``, when given, must be C-contiguous with the dataset's shape and dtype; it is
    filled and returned. See :func:`read_datasets`.
    """
    return read_datasets([dset], [out])[0]


def read_datasets(dsets: Sequence[h5py.Dataset],
                  outs: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
    """Read several whole datasets, directly where :func:`direct_layout` allows, else by h5py.

    The datasets read directly from one file are read together: the bytes from their first
    chunk to their last are read a few MiB at a time into a buffer kept by the calling thread
    (and reused by its next calls), and the chunks in each piece copied into place. A dataset
    stored in one contiguous piece is read straight into its output.

    Raises
    ------
    UnreadableFileError
        A chunk lies (partly) beyond the end of the file, or h5py cannot read the data;
        ``file`` names the file.
    ValueError
        An ``out`` array of the wrong shape, dtype or memory layout, or a dataset with a null
        dataspace (no array to read).
    """
    if outs is None:
        outs = [None] * len(dsets)
    if len(outs) != len(dsets):
        raise ValueError(f"{len(outs)} output arrays for {len(dsets)} datasets")
    results = [_output(dset, out) for dset, out in zip(dsets, outs, strict=True)]
    by_file: dict[str, list[tuple[DirectLayout, np.ndarray]]] = {}
    for dset, result in zip(dsets, results, strict=True):
        path = dset.file.filename
        try:
            layout = direct_layout(dset)
            if layout is None and dset.size:
                dset.read_direct(result)
        except OSError as exc:
            raise UnreadableFileError(f"cannot read {dset.name.lstrip('/')}: {exc}",
                                      file=path) from exc
        if layout is not None:
            by_file.setdefault(path, []).append((layout, result))
    for path, items in by_file.items():
        _read_file(path, items)
    return results


def _plain_type(dset: h5py.Dataset) -> bool:
    """The file stores each element exactly as NumPy holds ``dset.dtype``."""
    dtype = dset.dtype
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        return False
    return dset.id.get_type() == h5py.h5t.py_create(dtype)


def _chunk_table(dset: h5py.Dataset, shape: tuple[int, ...], chunks: tuple[int, ...]
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """Each chunk's first element and byte offset, in file order, or None if some chunk is
    not stored."""
    infos: list = []
    dset.id.chunk_iter(infos.append)
    n = len(infos)
    if n == 0:
        return None
    index = np.array([info.chunk_offset for info in infos], np.int64).reshape(n, len(shape))
    offsets = np.fromiter((info.byte_offset for info in infos), np.int64, n)
    sizes = np.fromiter((info.size for info in infos), np.int64, n)
    inside = np.all(index < np.array(shape, np.int64), axis=1)  # a shrunk dataset's leftovers
    expected = math.prod(-(-s // c) for s, c in zip(shape, chunks, strict=True))
    if (int(inside.sum()) != expected
            or np.any(sizes[inside] != math.prod(chunks) * dset.dtype.itemsize)):
        return None
    order = np.argsort(offsets[inside], kind="stable")
    return index[inside][order], offsets[inside][order]


def _collapse(shape: tuple[int, ...], chunks: tuple[int, ...], index: NDArray[np.int64]
              ) -> tuple[tuple[int, ...], tuple[int, ...], NDArray[np.int64]] | None:
    """Merge each axis every chunk spans entirely into the axis outside it.

    Returns the collapsed shape, chunk shape and chunk indices (at least one axis), or None
    when more than the kernel's four axes remain.
    """
    axes: list[tuple[int, int, NDArray[np.int64]]] = []  # innermost first
    for axis in range(len(shape) - 1, -1, -1):
        size, chunk, start = shape[axis], chunks[axis], index[:, axis]
        if axes and axes[-1][0] == axes[-1][1]:
            inner_size, inner_chunk, inner_start = axes.pop()
            size, chunk = size * inner_size, chunk * inner_chunk
            start = start * inner_size + inner_start
        axes.append((size, chunk, start))
    if not axes:  # a scalar
        axes.append((1, 1, np.zeros(len(index), np.int64)))
    if len(axes) > _KERNEL_RANK:
        return None
    axes.reverse()
    return (tuple(a[0] for a in axes), tuple(a[1] for a in axes),
            np.ascontiguousarray(np.stack([a[2] for a in axes], axis=1)))


def _output(dset: h5py.Dataset, out: np.ndarray | None) -> np.ndarray:
    if dset.shape is None:
        raise ValueError(f"{dset.name} has a null dataspace (h5py reads it as h5py.Empty)")
    if out is None:
        return np.empty(dset.shape, dset.dtype)
    if out.shape != dset.shape or out.dtype != dset.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {dset.dtype} with shape {dset.shape}, "
                         f"got {out.dtype} {out.shape} (C-contiguous: "
                         f"{out.flags.c_contiguous}) for {dset.name}")
    if not out.flags.writeable:
        raise ValueError(f"out for {dset.name} is read-only")
    return out


def _read_file(path: str, items: list[tuple[DirectLayout, np.ndarray]]) -> None:
    """Read the directly readable datasets of one file into their outputs."""
    try:
        with open(path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            for layout, _ in items:
                _check_within(layout, size, path)
            copies = []
            for layout, out in items:
                if layout.single_block:
                    _read_exactly(fh, layout.start, _bytes(out), path)
                else:
                    copies.append(_ChunkCopy(layout, out))
            if copies:
                _read_chunks(fh, copies, path)
    except OSError as exc:
        raise UnreadableFileError(f"cannot read data: {exc}", file=path) from exc


def _check_within(layout: DirectLayout, file_size: int, path: str) -> None:
    beyond = layout.byte_offset + layout.chunk_nbytes > file_size
    if np.any(beyond):
        first = int(layout.byte_offset[beyond][0])
        what = "data" if layout.contiguous else "chunk"
        raise UnreadableFileError(f"truncated: {layout.name} {what} at byte {first} ends "
                                  f"beyond end of file (size {file_size})", file=path)


def _bytes(array: np.ndarray) -> NDArray[np.uint8]:
    return array.reshape(-1).view(np.uint8)


def _read_exactly(fh: io.FileIO, offset: int, target: NDArray[np.uint8], path: str) -> None:
    """Fill ``target`` from ``offset``; a short read means the file shrank meanwhile."""
    view = memoryview(target)
    fh.seek(offset)
    done = 0
    while done < len(view):
        got = fh.readinto(view[done:])
        if not got:
            raise UnreadableFileError(f"truncated: the file ended at byte {offset + done} "
                                      f"while reading {len(view)} bytes from byte {offset}",
                                      file=path)
        done += got


class _ChunkCopy:
    """One dataset's chunks set up for the copy kernel.

    The copy moves words as wide as the item size and every address allow (up to 8 bytes).
    Axes along which a chunk is one word thick are looped over outermost, so that the
    innermost loop runs along a chunk's longest axis among the others.
    """

    def __init__(self, layout: DirectLayout, out: np.ndarray) -> None:
        itemsize = layout.dtype.itemsize
        common = int(np.bitwise_or.reduce(layout.byte_offset)) | itemsize | out.ctypes.data
        word = min(8, common & -common)
        per_item = itemsize // word
        pad = _KERNEL_RANK - len(layout.grid_shape)
        shape = np.array((1,) * pad + layout.grid_shape, np.int64)
        chunk = np.array((1,) * pad + layout.grid_chunk, np.int64)
        index = np.zeros((len(layout.chunk_index), _KERNEL_RANK), np.int64)
        index[:, pad:] = layout.chunk_index
        shape[-1] *= per_item
        chunk[-1] *= per_item
        index[:, -1] *= per_item
        out_strides = np.cumprod(np.r_[1, shape[:0:-1]])[::-1]  # C order, in words
        src_strides = np.cumprod(np.r_[1, chunk[:0:-1]])[::-1]
        order = sorted(range(_KERNEL_RANK), key=lambda axis: bool(chunk[axis] > 1))
        self.layout = layout
        self.word_type = _WORD_TYPES[word]
        self.out = _bytes(out).view(self.word_type)
        self.index = np.ascontiguousarray(index[:, order])
        self.shape = shape[order]
        self.chunk = chunk[order]
        self.src_strides = np.ascontiguousarray(src_strides[order])
        self.out_strides = np.ascontiguousarray(out_strides[order])

    def run(self, buffer: NDArray[np.uint8], base: int, first: int, stop: int) -> None:
        """Copy chunks ``first:stop`` (file order) from ``buffer``, file bytes from ``base``."""
        _scatter_chunks(buffer.view(self.word_type), base, self.layout.byte_offset[first:stop],
                        self.index[first:stop], self.out, self.shape, self.chunk,
                        self.src_strides, self.out_strides)


def _read_chunks(fh: io.FileIO, copies: list[_ChunkCopy], path: str) -> None:
    """Read the span of the datasets' chunks piece by piece, copying each piece's chunks."""
    start = min(copy.layout.start for copy in copies)
    start -= start % 8  # buffer positions then share the file offsets' alignment
    end = max(copy.layout.end for copy in copies)
    cuts = np.arange(start, end + _WINDOW, _WINDOW)
    # Chunks starting in window w are copies' chunks bounds[w]:bounds[w + 1].
    bounds = [np.searchsorted(copy.layout.byte_offset, cuts) for copy in copies]
    longest = max(copy.layout.chunk_nbytes for copy in copies)
    buffer = scratch(READ_BUFFER, (_WINDOW + longest + 8,), np.uint8)
    for w in range(len(cuts) - 1):
        base = int(cuts[w])
        stop = max((int(copy.layout.byte_offset[b[w + 1] - 1]) + copy.layout.chunk_nbytes
                    for copy, b in zip(copies, bounds, strict=True) if b[w + 1] > b[w]),
                   default=base)
        if stop == base:
            continue
        _read_exactly(fh, base, buffer[:stop - base], path)
        piece = buffer[:-(-(stop - base) // 8) * 8]
        for copy, b in zip(copies, bounds, strict=True):
            if b[w + 1] > b[w]:
                copy.run(piece, base, int(b[w]), int(b[w + 1]))


@numba.njit(cache=True, nogil=True)
def _scatter_chunks(src, base, byte_offset, index, out, shape, chunk, src_strides,
                    out_strides):
    """Copy chunks stored whole in ``src`` into ``out``, along four axes given by strides.

    ``src`` holds the file's bytes from offset ``base``; chunk ``n`` starts at file offset
    ``byte_offset[n]`` and holds the block of the array ``out`` (shape ``shape``) that starts
    at ``index[n]`` and has shape ``chunk``, cut at the array's edges. Shapes, indices and
    strides count words of ``src``'s and ``out``'s type.
    """
    ss0, ss1, ss2, ss3 = src_strides[0], src_strides[1], src_strides[2], src_strides[3]
    os0, os1, os2, os3 = out_strides[0], out_strides[1], out_strides[2], out_strides[3]
    step_src, step_out = numba.uint64(ss3), numba.uint64(os3)
    for n in range(byte_offset.shape[0]):
        i0, i1, i2, i3 = index[n, 0], index[n, 1], index[n, 2], index[n, 3]
        e0 = min(chunk[0], shape[0] - i0)
        e1 = min(chunk[1], shape[1] - i1)
        e2 = min(chunk[2], shape[2] - i2)
        e3 = min(chunk[3], shape[3] - i3)
        src_n = (byte_offset[n] - base) // src.itemsize
        out_n = i0 * os0 + i1 * os1 + i2 * os2 + i3 * os3
        for a in range(e0):
            for b in range(e1):
                for c in range(e2):
                    # Unsigned indices: Numba then skips its negative-index wraparound,
                    # which made the copy 1.7 times slower.
                    s = numba.uint64(src_n + a * ss0 + b * ss1 + c * ss2)
                    d = numba.uint64(out_n + a * os0 + b * os1 + c * os2)
                    for _ in range(e3):
                        out[d] = src[s]
                        s += step_src
                        d += step_out
