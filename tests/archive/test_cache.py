"""The conversion cache on real files: least recently used evicted first, the newest entry
kept, a changed source fingerprint rebuilt, a failed conversion leaves no entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from contimg_dask.archive.cache import ConversionCache


def _maker(size: int, calls: list[str], key: str):
    def make(path: Path) -> None:
        calls.append(key)
        path.write_bytes(b"x" * size)
    return make


def test_least_recently_used_is_evicted(tmp_path: Path) -> None:
    cache = ConversionCache(tmp_path / "cache", max_bytes=2500)
    calls: list[str] = []
    a = cache.get("a", "a.bin", "f1", _maker(1000, calls, "a"))
    cache.get("b", "b.bin", "f1", _maker(1000, calls, "b"))
    assert cache.get("a", "a.bin", "f1", _maker(1000, calls, "a")).hit  # a used after b
    cache.get("c", "c.bin", "f1", _maker(1000, calls, "c"))  # 3000 > 2500: b goes
    assert calls == ["a", "b", "c"]
    assert cache.total_bytes() == 2000
    assert cache.get("a", "a.bin", "f1", _maker(1000, calls, "a")).path == a.path
    assert not cache.get("b", "b.bin", "f1", _maker(1000, calls, "b")).hit
    assert calls == ["a", "b", "c", "b"]
    # An entry larger than the whole cache is still served (and everything else evicted).
    big = cache.get("d", "d.bin", "f1", _maker(5000, calls, "d"))
    assert big.path.exists() and cache.total_bytes() == 5000


def test_changed_source_rebuilds_and_failure_leaves_nothing(tmp_path: Path) -> None:
    cache = ConversionCache(tmp_path / "cache", max_bytes=10_000)
    calls: list[str] = []
    first = cache.get("a", "a.bin", "f1", _maker(10, calls, "a"))
    second = cache.get("a", "a.bin", "f2", _maker(20, calls, "a"))
    assert not second.hit and second.path == first.path and second.path.stat().st_size == 20

    def broken(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        cache.get("z", "z.bin", "f1", broken)
    assert [key for _, _, e in cache.entries() for key in [e.name]] == [first.path.parent.name]
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp." in p.name]
