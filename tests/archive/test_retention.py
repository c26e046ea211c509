"""Retention (both backends): old raw files go only once every product made from them
exists and matches its checksum; Measurement Sets go only while their block store can make
them again; nothing an unverifiable product was made from is deleted; a dry run touches
nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from contimg_dask.archive import retention
from contimg_dask.archive.fingerprint import content_checksum, fingerprint
from contimg_dask.archive.index import ArchiveIndex
from contimg_dask.archive.records import ArchiveEntry, product_id
from contimg_dask.config.schema import ArchiveRetentionRule
from contimg_dask.stages.contract import Product, Provenance, StageResult
from contimg_dask.state import StateStore

DAY = 86400.0
NOW = time.time()
RULES = [ArchiveRetentionRule(name="raw_uvh5", kind="raw", older_than_days=30,
                              when="derived_verified"),
         ArchiveRetentionRule(name="ms_exports", kind="ms", older_than_days=7,
                              when="sources_verified")]


def _file(path: Path, text: str, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    return path


def _store(path: Path, text: str, age_days: float = 0.0) -> Path:
    """A directory product (stands for a block store: retention only reads bytes)."""
    _file(path / "zarr.json", "{}", age_days)
    _file(path / "chunk", text, age_days)
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    return path


def _record(state: StateStore, block: str, stage: str, kind: str, path: Path,
            inputs: list[Path], checksum: str | None) -> None:
    state.enqueue(block, stage)
    lease = state.claim("retention-test", 60.0, [stage])
    state.complete(lease, StageResult(stage, block, (Product(kind, path, checksum),),
                                      Provenance(tuple(map(str, inputs)), "hash")))


def _index_ms(index: ArchiveIndex, block: str, ms: Path, store: Path) -> None:
    index.add([ArchiveEntry(
        product_id=product_id(block, "ms"), kind="ms", path=str(ms), block_id=block,
        collection="strip/+0.0/x", ra_deg=0.0, dec_deg=0.0, strip_dec_deg=0.0,
        time_start=NOW - 40 * DAY, time_end=NOW - 40 * DAY + 300,
        provenance={"inputs": [str(store)],
                    "input_fingerprints": {str(store): fingerprint(store)}})])


@pytest.fixture
def scene(store: StateStore, index: ArchiveIndex, tmp_path: Path) -> dict[str, Path]:
    p: dict[str, Path] = {}
    # Block A: both raw files old; its block store exists and verifies.
    p["a0"], p["a1"] = (_file(tmp_path / f"raw/A_sb0{i}.hdf5", f"A{i}", 40) for i in (0, 1))
    p["storeA"] = _store(tmp_path / "stores/A.zarr", "A")
    # Block B: raw file old, its block store changed after it was recorded (bad checksum).
    p["b0"] = _file(tmp_path / "raw/B_sb00.hdf5", "B0", 40)
    p["storeB"] = _store(tmp_path / "stores/B.zarr", "B")
    # Block C: inputs partly expired (one old, one new); the block store is missing.
    p["c0"] = _file(tmp_path / "raw/C_sb00.hdf5", "C0", 40)
    p["c1"] = _file(tmp_path / "raw/C_sb01.hdf5", "C1", 2)
    # Block D: inputs partly expired, its block store verifies: only the old file goes.
    p["d0"] = _file(tmp_path / "raw/D_sb00.hdf5", "D0", 40)
    p["d1"] = _file(tmp_path / "raw/D_sb01.hdf5", "D1", 2)
    p["storeD"] = _store(tmp_path / "stores/D.zarr", "D")
    # A raw file nothing was made from yet.
    p["e0"] = _file(tmp_path / "raw/E_sb00.hdf5", "E0", 40)
    # Measurement Sets: A's (old, its store unchanged), B's (old, its store changed since),
    # D's (new).
    p["msA"] = _store(tmp_path / "products/A.ms", "msA", 10)
    p["msB"] = _store(tmp_path / "products/B.ms", "msB", 10)
    p["msD"] = _store(tmp_path / "products/D.ms", "msD", 1)
    for block, raws in {"A": ["a0", "a1"], "B": ["b0"], "C": ["c0", "c1"],
                        "D": ["d0", "d1"], "E": ["e0"]}.items():
        for sb, name in enumerate(raws):
            store.register_file(block, str(p[name]), sb)
    stores = {"A": tmp_path / "stores/A.zarr", "B": p["storeB"],
              "C": tmp_path / "stores/C.zarr", "D": p["storeD"]}
    for block, raws in {"A": ["a0", "a1"], "B": ["b0"], "C": ["c0", "c1"],
                        "D": ["d0", "d1"]}.items():
        checksum = content_checksum(stores[block]) if stores[block].exists() else "0" * 64
        _record(store, block, "ingest", "block_store", stores[block], [p[r] for r in raws],
                checksum)
    for block in ("A", "B", "D"):
        _record(store, block, "export", "ms", p[f"ms{block}"], [stores[block]], None)
        _index_ms(index, block, p[f"ms{block}"], stores[block])
    _file(p["storeB"] / "chunk", "B changed", 0)
    return p


def test_plan_keeps_every_input_still_needed(store: StateStore, index: ArchiveIndex,
                                             scene: dict[str, Path]) -> None:
    decisions = {Path(d.path): d for d in retention.plan(store, index, RULES, now=NOW)}
    deleted = {name for name, path in scene.items()
               if path in decisions and decisions[path].action == "delete"}
    assert deleted == {"a0", "a1", "d0", "msA"}
    assert "does not match its checksum" in decisions[scene["b0"]].reason
    assert "is missing" in decisions[scene["c0"]].reason
    assert "no recorded product" in decisions[scene["e0"]].reason
    assert "changed" in decisions[scene["msB"]].reason
    # Too young to be considered at all.
    for name in ("c1", "d1", "msD"):
        assert scene[name] not in decisions
    # A dry run: everything is still there.
    assert all(path.exists() for path in scene.values())


def test_apply_deletes_only_what_the_plan_allows(store: StateStore, index: ArchiveIndex,
                                                 scene: dict[str, Path]) -> None:
    decisions = retention.plan(store, index, RULES, now=NOW)
    deleted = retention.apply(decisions, store)
    assert sorted(map(Path, deleted)) == sorted(scene[n] for n in ("a0", "a1", "d0", "msA"))
    for name, path in scene.items():
        assert path.exists() == (name not in {"a0", "a1", "d0", "msA"}), name
    assert not list((scene["msA"].parent).glob("A.ms.deleting.*"))
    events = [e for e in store.events() if e.kind == "retention_deleted"]
    assert sorted(e.data["path"] for e in events) == sorted(deleted)
    # Applied again: nothing more goes (B, C, E still lack verified products).
    assert retention.apply(retention.plan(store, index, RULES, now=NOW), store) == []


def test_command_is_a_dry_run_unless_applied(store: StateStore, index: ArchiveIndex,
                                             scene: dict[str, Path], cli_settings: list[str],
                                             capsys: pytest.CaptureFixture) -> None:
    """``contimg archive retention`` with the shipped policies (raw after 30 days, MS after
    7), which the plan tests above use too."""
    import json

    from contimg_dask.cli.main import main

    base = [*cli_settings, "archive", "retention"]
    assert main([*base, "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    expected = sorted(str(scene[n]) for n in ("a0", "a1", "d0", "msA"))
    assert not dry["applied"] and dry["deleted"] == []
    assert sorted(d["path"] for d in dry["decisions"] if d["action"] == "delete") == expected
    assert all(path.exists() for path in scene.values())
    assert main([*base, "--apply", "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["deleted"]) == expected
    assert not any(scene[n].exists() for n in ("a0", "a1", "d0", "msA"))


def test_a_product_recorded_again_is_verified_as_it_is_now(store: StateStore,
                                                           index: ArchiveIndex,
                                                           tmp_path: Path) -> None:
    """A block store recorded by ingest, then changed and recorded again by a later stage
    (its new checksum): the raw files ingest made it from go once the store matches its
    latest record; while it matches neither, they stay."""
    raw = _file(tmp_path / "raw/F_sb00.hdf5", "F0", 40)
    store.register_file("F", str(raw), 0)
    block_store = _store(tmp_path / "stores/F.zarr", "F")
    _record(store, "F", "ingest", "block_store", block_store, [raw],
            content_checksum(block_store))
    _file(block_store / "chunk", "F flagged", 0)
    _record(store, "F", "flag", "block_store", block_store, [block_store],
            content_checksum(block_store))
    (decision,) = retention.plan(store, index, RULES[:1], now=NOW)
    assert (decision.path, decision.action) == (str(raw), "delete"), decision
    _file(block_store / "chunk", "F damaged", 0)
    (decision,) = retention.plan(store, index, RULES[:1], now=NOW)
    assert decision.action == "keep" and "does not match its checksum" in decision.reason
