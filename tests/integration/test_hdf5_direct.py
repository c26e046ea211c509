"""Reading uncompressed HDF5 datasets by their chunks' byte offsets, checked bit for bit
against h5py on simulated DSA-110 subbands, real HERA files and synthetic layouts."""

from __future__ import annotations

import itertools
import shutil
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from contimg_dask.errors import UnreadableFileError
from contimg_dask.io.system import scratch as scratch_module
from contimg_dask.io.uvh5 import hdf5_direct
from contimg_dask.io.uvh5.hdf5_direct import direct_layout, read_dataset, read_datasets
from contimg_dask.io.uvh5.reader import read_uvh5_meta, read_uvh5_visibilities
from tests.conftest import REAL_DATA

REAL = REAL_DATA
DATA = ("visdata", "flags", "nsamples")


def subband_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*_sb*.hdf5"))


def assert_same(got: np.ndarray, expected: object) -> None:
    """Bit for bit: same dtype (byte order included), shape and bytes (objects: equal)."""
    expected = np.asarray(expected)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    if got.dtype.hasobject:
        assert got.tolist() == expected.tolist()
    else:
        assert got.tobytes() == expected.tobytes()


def sample(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Random values of ``dtype``, floats with NaN, infinities and negative zero mixed in."""
    kind = np.dtype(dtype).kind
    if kind == "b":
        return rng.random(shape) < 0.5
    if kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=np.dtype(dtype).newbyteorder("="),
                            endpoint=True).astype(dtype)
    values = rng.standard_normal(shape) * 1e3
    if kind == "c":
        values = values + 1j * rng.standard_normal(shape)
    flat = values.reshape(-1)
    flat[:: 7] = np.nan
    flat[1:: 11] = np.inf
    flat[2:: 13] = -0.0
    return values.astype(dtype)


def chunk_slices(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[slice, ...]]:
    return [tuple(slice(i, min(i + c, n)) for i, c, n in zip(start, chunks, shape, strict=True))
            for start in itertools.product(*(range(0, n, c) for n, c in zip(shape, chunks,
                                                                            strict=True)))]


def file_order_is_logical(dset: h5py.Dataset) -> bool:
    infos: list = []
    dset.id.chunk_iter(infos.append)
    logical = sorted(infos, key=lambda info: info.chunk_offset)
    return all(a.byte_offset < b.byte_offset for a, b in itertools.pairwise(logical))


def write_scrambled(path: Path, data: np.ndarray, chunks: tuple[int, ...], seed: int) -> None:
    """One chunked dataset written chunk by chunk in random order, with no chunk cache, so
    that the chunks lie in the file in that order."""
    order = chunk_slices(data.shape, chunks)
    np.random.default_rng(seed).shuffle(order)
    with h5py.File(path, "w", rdcc_nbytes=0) as f:
        dset = f.create_dataset("x", shape=data.shape, dtype=data.dtype, chunks=chunks)
        for sel in order:
            dset[sel] = data[sel]


def write_appended(path: Path, data: np.ndarray, chunks: tuple[int, ...], rows: int) -> None:
    """A resizable dataset grown ``rows`` rows at a time, as the correlator writes."""
    with h5py.File(path, "w", rdcc_nbytes=0) as f:
        dset = f.create_dataset("x", shape=(0, *data.shape[1:]), dtype=data.dtype,
                                chunks=chunks, maxshape=(None, *data.shape[1:]))
        for lo in range(0, len(data), rows):
            hi = min(lo + rows, len(data))
            dset.resize(hi, axis=0)
            dset[lo:hi] = data[lo:hi]


# --- simulated DSA-110 subbands ---------------------------------------------------------------

def test_simulated_subbands_are_read_directly_and_exactly(small_blocks: Path) -> None:
    for path in subband_files(small_blocks)[:4]:
        with h5py.File(path, "r") as f:
            for name in DATA:
                dset = f["Data"][name]
                layout = direct_layout(dset)
                assert layout is not None and not layout.contiguous
                assert_same(read_dataset(dset), dset[()])


def test_uvh5_reads_into_reused_buffers(small_blocks: Path) -> None:
    """With ``reuse_buffers`` a thread's reads share its scratch buffers: each read is
    exact, and the next read (another subband) overwrites the previous one's arrays."""
    first, second = (read_uvh5_meta(p) for p in subband_files(small_blocks)[2:4])
    vis_1, flags_1, nsamples_1 = read_uvh5_visibilities(first, reuse_buffers=True)
    kept = [a.copy() for a in (vis_1, flags_1, nsamples_1)]
    for got, expected in zip(kept, read_uvh5_visibilities(first), strict=True):
        assert_same(got, expected)
    vis_2, _, _ = read_uvh5_visibilities(second, reuse_buffers=True)
    assert np.shares_memory(vis_1, vis_2)
    assert_same(vis_2, read_uvh5_visibilities(second)[0])
    assert not np.array_equal(vis_1, kept[0])


def test_read_datasets_reads_a_subbands_three_datasets_together(small_blocks: Path) -> None:
    path = subband_files(small_blocks)[5]
    with h5py.File(path, "r") as f:
        dsets = [f["Data"][name] for name in DATA]
        for got, dset in zip(read_datasets(dsets), dsets, strict=True):
            assert_same(got, dset[()])


def test_uvh5_visibilities_are_unchanged(small_blocks: Path) -> None:
    path = subband_files(small_blocks)[0]
    meta = read_uvh5_meta(path)
    vis, flags, nsamples = read_uvh5_visibilities(meta, ascending=False)
    shape = (meta.n_times, meta.n_baselines, len(meta.freq_hz), len(meta.polarizations))
    with h5py.File(path, "r") as f:
        for got, name in ((vis, "visdata"), (flags, "flags"), (nsamples, "nsamples")):
            assert_same(got, f["Data"][name][:, 0].reshape(shape))


# --- real HERA files -------------------------------------------------------------------------

HERA = {
    # file: datasets read directly (the others are filtered with LZF, or integer compound)
    "zen.2458661.23480.HH.uvh5": {"visdata"},
    "zen.2458432.34569.uvh5": set(),
}


@pytest.mark.parametrize("name", sorted(HERA))
def test_real_hera_files_match_h5py(name: str) -> None:
    with h5py.File(REAL / name, "r") as f:
        data = f["Data"]
        assert {key for key in data if direct_layout(data[key]) is not None} == HERA[name]
        for key in data:
            assert_same(read_dataset(data[key]), data[key][()])
        header: list[h5py.Dataset] = []

        def collect(_: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.shape is not None:
                header.append(obj)

        f["Header"].visititems(collect)
        assert any(direct_layout(dset) is not None for dset in header)
        for dset in header:  # contiguous numbers (direct) and strings (h5py)
            assert_same(read_dataset(dset), dset[()])


@pytest.mark.parametrize("name", sorted(HERA))
def test_real_hera_visibilities_through_the_uvh5_reader(name: str) -> None:
    meta = read_uvh5_meta(REAL / name)
    vis, flags, nsamples = read_uvh5_visibilities(meta, ascending=False)
    with h5py.File(REAL / name, "r") as f:
        raw = f["Data"]["visdata"][()]
        raw_flags = f["Data"]["flags"][()]
        raw_nsamples = f["Data"]["nsamples"][()]
    if raw.dtype.names:
        raw = raw["r"] + 1j * raw["i"]
    if meta.legacy_spw_axis:
        raw, raw_flags, raw_nsamples = raw[:, 0], raw_flags[:, 0], raw_nsamples[:, 0]
    rows = (meta.blt_time_index, meta.blt_baseline_index)
    if meta.time_major_regular:
        rows = np.divmod(np.arange(len(raw)), meta.n_baselines)
    assert vis.dtype == np.complex64 and flags.dtype == bool and nsamples.dtype == np.float32
    np.testing.assert_array_equal(vis[rows], raw.astype(np.complex64))
    np.testing.assert_array_equal(flags[rows], raw_flags)
    np.testing.assert_array_equal(nsamples[rows], raw_nsamples)


# --- synthetic layouts -----------------------------------------------------------------------

SCRAMBLED = [
    # shape, chunks, dtype: edge chunks on several axes, one-element-thick chunks,
    # axes spanned entirely by chunks (merged), both byte orders
    ((100, 1, 13, 2), (16, 1, 4, 1), "<c8"),
    ((37, 5, 3), (8, 2, 3), "<f4"),
    ((37, 5, 3), (8, 2, 3), ">f4"),
    ((21, 6, 2), (4, 6, 2), "<c16"),
    ((21, 6, 2), (5, 4, 1), ">c16"),
    ((33, 9, 2), (10, 4, 1), "?"),
    ((1000,), (64,), "<i2"),
    ((50, 7), (7, 3), ">i4"),
    ((17, 3, 5), (4, 3, 2), "<i8"),
    ((30, 7), (4, 3), ">f8"),
    ((9, 10, 11), (9, 10, 11), "<u1"),
    ((6, 5, 4, 3), (5, 2, 3, 2), "<u4"),
]


@pytest.mark.parametrize(("shape", "chunks", "dtype"), SCRAMBLED)
def test_chunks_in_scrambled_file_order(tmp_path: Path, shape: tuple[int, ...],
                                        chunks: tuple[int, ...], dtype: str) -> None:
    data = sample(np.random.default_rng(len(shape) + chunks[0]), shape, dtype)
    path = tmp_path / "scrambled.h5"
    write_scrambled(path, data, chunks, seed=3)
    with h5py.File(path, "r") as f:
        dset = f["x"]
        assert dset.dtype == np.dtype(dtype)
        n_chunks = len(chunk_slices(shape, chunks))
        assert n_chunks == 1 or not file_order_is_logical(dset)
        assert direct_layout(dset) is not None
        expected = dset[()]
        assert_same(read_dataset(dset), expected)
    assert_same(expected, data)


@pytest.mark.parametrize(("dtype", "chunks", "rows"), [
    ("<c8", (128, 1, 12, 1), 100),  # the correlator's chunks, rows not a chunk multiple
    ("?", (256, 1, 24, 1), 100),
    ("<f4", (256, 1, 12, 1), 100),
    (">c8", (50, 1, 48, 2), 77),
])
def test_resizable_dataset_appended_row_block_by_row_block(
        tmp_path: Path, dtype: str, chunks: tuple[int, ...], rows: int) -> None:
    data = sample(np.random.default_rng(5), (700, 1, 48, 2), dtype)
    path = tmp_path / "appended.h5"
    write_appended(path, data, chunks, rows)
    with h5py.File(path, "r") as f:
        assert direct_layout(f["x"]) is not None
        assert_same(read_dataset(f["x"]), f["x"][()])
        assert_same(f["x"][()], data)


def test_chunks_larger_than_the_dataset(tmp_path: Path) -> None:
    data = sample(np.random.default_rng(2), (5, 3), "<f8")
    path = tmp_path / "big_chunks.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(8, 4), maxshape=(None, 10))
    with h5py.File(path, "r") as f:
        layout = direct_layout(f["x"])
        assert layout is not None and layout.chunk_nbytes == 8 * 4 * 8
        assert_same(read_dataset(f["x"]), data)


@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<c8", ">c16", "?", "<i4", ">u2"])
def test_contiguous_layout_is_read_into_the_output(tmp_path: Path, dtype: str) -> None:
    data = sample(np.random.default_rng(7), (40, 3, 5), dtype)
    path = tmp_path / "contiguous.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data)
        f.create_dataset("scalar", data=data.reshape(-1)[3])
    with h5py.File(path, "r") as f:
        layout = direct_layout(f["x"])
        assert layout is not None and layout.contiguous and layout.single_block
        assert_same(read_dataset(f["x"]), f["x"][()])
        assert direct_layout(f["scalar"]) is not None
        assert_same(read_dataset(f["scalar"]), f["scalar"][()])


def test_user_block_offsets(tmp_path: Path) -> None:
    data = sample(np.random.default_rng(8), (30, 4, 2), "<c8")
    path = tmp_path / "userblock.h5"
    with h5py.File(path, "w", userblock_size=1024) as f:
        f.create_dataset("chunked", data=data, chunks=(7, 3, 1))
        f.create_dataset("contiguous", data=data)
    with h5py.File(path, "r") as f:
        for name in ("chunked", "contiguous"):
            assert direct_layout(f[name]) is not None
            assert_same(read_dataset(f[name]), data)


@pytest.mark.parametrize("filters", [
    {"compression": "gzip", "compression_opts": 4},
    {"compression": "lzf"},
    {"shuffle": True},
    {"fletcher32": True},
])
def test_filtered_datasets_fall_back_to_h5py(tmp_path: Path, filters: dict) -> None:
    data = sample(np.random.default_rng(9), (64, 6, 2), "<f4")
    path = tmp_path / "filtered.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(16, 3, 1), **filters)
    with h5py.File(path, "r") as f:
        assert direct_layout(f["x"]) is None
        assert_same(read_dataset(f["x"]), data)
        out = np.full(data.shape, 7, np.float32)
        assert read_dataset(f["x"], out=out) is out
        assert_same(out, data)


def test_other_ineligible_datasets_fall_back_to_h5py(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    compound = np.zeros((20, 3), [("r", "<i4"), ("i", "<i4")])
    compound["r"] = rng.integers(-100, 100, (20, 3))
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("compound", data=compound, chunks=(4, 3))  # HERA's visibilities
        f.create_dataset("strings", data=np.array([b"a", b"bc", b"def"]))
        f.create_dataset("vlen", data=["x", "yz"], dtype=h5py.string_dtype())
        # Only the first chunk written: the others hold the fill value, not stored.
        f.create_dataset("sparse", shape=(40,), dtype="<f8", chunks=(8,), fillvalue=-1.5)
        f["sparse"][:8] = np.arange(8.0)
        f.create_dataset("empty", shape=(0, 4), dtype="<f4", chunks=(2, 4), maxshape=(None, 4))
        # Six axes that no merge reduces to the kernel's four.
        f.create_dataset("rank6", data=rng.standard_normal((3, 4, 3, 4, 3, 4)),
                         chunks=(2, 3, 2, 3, 2, 3))
        f.create_dataset("null", shape=None, dtype="<f4")
        f.create_dataset("compact", data=np.arange(4.0), dcpl=compact_layout())
    with h5py.File(path, "r") as f:
        for name in ("compound", "strings", "vlen", "sparse", "empty", "rank6", "compact"):
            assert direct_layout(f[name]) is None, name
            assert_same(read_dataset(f[name]), f[name][()])
        assert_same(read_dataset(f["sparse"])[8:], np.full(32, -1.5))
        with pytest.raises(ValueError, match="null dataspace"):
            read_dataset(f["null"])


def test_file_types_laid_out_unlike_numpy_fall_back_to_h5py(tmp_path: Path) -> None:
    """h5py reads these as int32 and complex64, converting each element on the way."""
    short = h5py.h5t.STD_I32LE.copy()
    short.set_precision(16)  # h5py sign-extends the 16 stored bits
    padded = h5py.h5t.create(h5py.h5t.COMPOUND, 16)
    padded.insert(b"r", 0, h5py.h5t.IEEE_F32LE)
    padded.insert(b"i", 8, h5py.h5t.IEEE_F32LE)
    values = {"short": np.arange(-20, 20, dtype=np.int32),
              "padded": sample(np.random.default_rng(14), (40,), "<c8")}
    path = tmp_path / "types.h5"
    with h5py.File(path, "w") as f:
        for name, file_type in (("short", short), ("padded", padded)):
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_chunk((8,))
            h5py.h5d.create(f.id, name.encode(), file_type, h5py.h5s.create_simple((40,)),
                            dcpl=plist)
            f[name][...] = values[name]
    with h5py.File(path, "r") as f:
        for name, data in values.items():
            assert direct_layout(f[name]) is None
            assert_same(read_dataset(f[name]), data)


def compact_layout() -> h5py.h5p.PropDCID:
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.COMPACT)
    return plist


def test_file_read_into_memory_falls_back_to_h5py(tmp_path: Path) -> None:
    data = sample(np.random.default_rng(11), (20, 5), "<f4")
    with h5py.File(tmp_path / "core.h5", "w") as f:
        f.create_dataset("x", data=data, chunks=(4, 5))
    with h5py.File(tmp_path / "core.h5", "r", driver="core") as f:
        assert direct_layout(f["x"]) is None
        assert_same(read_dataset(f["x"]), data)


def test_file_open_for_writing_falls_back_to_h5py(tmp_path: Path) -> None:
    """Data just written may still be in HDF5's caches, not in the file."""
    data = sample(np.random.default_rng(15), (64, 8), "<f8")
    with h5py.File(tmp_path / "open.h5", "w") as f:
        f.create_dataset("chunked", data=data, chunks=(8, 8))
        f.create_dataset("contiguous", data=data)
        f["chunked"][3] = f["contiguous"][3] = -1.0
        data[3] = -1.0
        for name in ("chunked", "contiguous"):
            assert direct_layout(f[name]) is None
            assert_same(read_dataset(f[name]), data)


# --- outputs and the pooled buffer -----------------------------------------------------------

def _read_buffer() -> np.ndarray | None:
    """This thread's read buffer of the direct reader (its io/system/scratch.py pool entry)."""
    return scratch_module._local.__dict__.get("pool", {}).get(hdf5_direct.READ_BUFFER)


def test_reused_output_and_buffer_across_files(small_blocks: Path) -> None:
    first, second = subband_files(small_blocks)[:2]
    with h5py.File(first, "r") as f:
        outs = [np.empty(f["Data"][name].shape, f["Data"][name].dtype) for name in DATA]
        read_datasets([f["Data"][name] for name in DATA], outs)
        before = [out.copy() for out in outs]
    buffer = _read_buffer()
    with h5py.File(second, "r") as f:
        dsets = [f["Data"][name] for name in DATA]
        got = read_datasets(dsets, outs)
        assert all(a is b for a, b in zip(got, outs, strict=True))
        for out, dset in zip(outs, dsets, strict=True):
            assert_same(out, dset[()])
    assert outs[0].tobytes() != before[0].tobytes()  # the files' visibilities differ
    assert _read_buffer() is buffer  # reused, not reallocated


def test_pooled_buffer_grows_and_is_reused(tmp_path: Path) -> None:
    small = sample(np.random.default_rng(12), (64, 4), "<f8")
    large = sample(np.random.default_rng(13), (5000, 300), "<f8")  # 12 MB > one read window
    path = tmp_path / "sizes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("small", data=small, chunks=(8, 3))
        f.create_dataset("large", data=large, chunks=(100, 7))
    with h5py.File(path, "r") as f:
        scratch_module._local.pool.pop(hdf5_direct.READ_BUFFER, None)
        assert_same(read_dataset(f["small"]), small)
        first = _read_buffer()
        assert_same(read_dataset(f["large"]), large)
        grown = _read_buffer()
        assert len(grown) >= len(first)
        assert_same(read_dataset(f["small"]), small)
        assert _read_buffer() is grown


def test_threads_have_their_own_buffers(small_blocks: Path) -> None:
    files = subband_files(small_blocks)[:8] * 3

    def read(path: Path) -> tuple[list[np.ndarray], int, int]:
        with h5py.File(path, "r") as f:
            arrays = read_datasets([f["Data"][name] for name in DATA])
        return arrays, threading.get_ident(), id(_read_buffer())

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(read, files))
    buffers: dict[int, set[int]] = {}
    for path, (arrays, thread, buffer) in zip(files, results, strict=True):
        buffers.setdefault(thread, set()).add(buffer)
        with h5py.File(path, "r") as f:
            for got, name in zip(arrays, DATA, strict=True):
                assert_same(got, f["Data"][name][()])
    assert all(len(ids) == 1 for ids in buffers.values())  # each thread reuses its own
    assert len(set.union(*buffers.values())) == len(buffers)


def test_wrong_output_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros((4, 6), "<f4"), chunks=(2, 3))
    with h5py.File(path, "r") as f:
        for out in (np.empty((4, 6), "<f8"), np.empty((6, 4), "<f4"),
                    np.empty((6, 4), "<f4").T, np.empty((4, 6), ">f4")):
            with pytest.raises(ValueError, match="out must be"):
                read_dataset(f["x"], out=out)


# --- truncated files -------------------------------------------------------------------------

def declare_end_of_file(path: Path) -> None:
    """Make the superblock (version 0, no checksum) agree with a cut file, so that HDF5 opens
    it: the end-of-file address is at byte 40."""
    with path.open("r+b") as handle:
        head = handle.read(48)
        assert head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] == 0
        handle.seek(40)
        handle.write(struct.pack("<Q", path.stat().st_size))


def test_file_cut_while_open_is_named(small_blocks: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "cut.hdf5"
    shutil.copy(subband_files(small_blocks)[0], damaged)
    with h5py.File(damaged, "r") as f:
        dset = f["Data"]["visdata"]
        first = direct_layout(dset).start
        with damaged.open("r+b") as handle:
            handle.truncate(first + 100)
        with pytest.raises(UnreadableFileError) as info:
            read_dataset(dset)
    assert info.value.file == str(damaged)
    assert info.value.message == (f"truncated: Data/visdata chunk at byte {first} ends beyond "
                                  f"end of file (size {first + 100})")


def test_truncated_subband_is_named(small_blocks: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "truncated.hdf5"
    shutil.copy(subband_files(small_blocks)[1], damaged)
    meta = read_uvh5_meta(damaged)
    with h5py.File(damaged, "r") as f:
        layouts = {name: direct_layout(f["Data"][name]) for name in DATA}
    last = max(layouts.values(), key=lambda layout: layout.end)
    assert last.end == damaged.stat().st_size  # the chunks end the file
    with damaged.open("r+b") as handle:
        handle.truncate(last.end - last.chunk_nbytes // 2)
    declare_end_of_file(damaged)

    with h5py.File(damaged, "r") as f:
        with pytest.raises(UnreadableFileError, match=f"truncated: {last.name} chunk") as info:
            read_dataset(f[last.name])
        assert info.value.file == str(damaged)
        with pytest.raises(OSError, match="addr overflow"):  # h5py fails too
            f[last.name][()]
    with pytest.raises(UnreadableFileError, match="truncated") as info:
        read_uvh5_visibilities(meta)
    assert info.value.file == str(damaged)


def test_truncated_subband_refused_by_hdf5_is_named(small_blocks: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "cut.hdf5"
    shutil.copy(subband_files(small_blocks)[2], damaged)
    meta = read_uvh5_meta(damaged)
    with damaged.open("r+b") as handle:
        handle.truncate(damaged.stat().st_size - 1000)
    with pytest.raises(UnreadableFileError) as info:
        read_uvh5_visibilities(meta)
    assert info.value.file == str(damaged)
