"""Every stage through the stage contract (contimg_dask/stages) on a small simulated block of
3C147's strip: the products exist and are what they say, the figures are the ones the
store records (and agree with the simulator's truth), and a second run gives the same
products and figures (the Measurement Set's values and the solutions' chunks bit for bit)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning

from contimg_dask.config import config_hash
from contimg_dask.io.store.block_store import block_node, open_block, quiet_zarr_strings
from contimg_dask.io.store.block_view import read_geometry
from contimg_dask.io.store.data_groups import data_group
from contimg_dask.io.store.solutions import read_solutions
from contimg_dask.processing.flag import restore_flags
from contimg_dask.simulate import SimulationOptions, simulate_blocks
from contimg_dask.stages import BlockRef, Stage, StageResult
from contimg_dask.stages.antenna_figures import (
    FLAGGED,
    SOLUTION_AMP,
    SOLUTION_PHASE,
    SOLUTION_SNR,
    antenna_values,
)
from contimg_dask.stages.export import ExportStage
from contimg_dask.stages.layout import ms_path, solutions_path
from contimg_dask.stages.registry import STAGES, get_stage
from tests.helpers import group_visibilities_of, make_config, ms_digests, read_truth

CALIBRATOR = "3C147"
ORDER = ("ingest", "rephase", "flag", "calibrate_solve", "calibrate_apply", "export")


def _run_all(block: BlockRef, config) -> dict[str, StageResult]:
    return {name: get_stage(name).run(block, config) for name in ORDER}


def _checksums(path: Path, skip_metadata: bool = False) -> dict[str, str]:
    """SHA-256 of every file under ``path``; with ``skip_metadata`` zarr's metadata files
    (their attributes hold creation times) are left out, only the chunks compared."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*"))
            if p.is_file() and not (skip_metadata and p.name == "zarr.json")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One block of 3C147's strip (it transits the block), through every stage twice."""
    root = tmp_path_factory.mktemp("stages")
    config = make_config(root, **{"simulation.presets.small.n_antennas": 48})
    summary = simulate_blocks(config, root / "incoming", SimulationOptions(
        preset="small", n_blocks=1, seed=11, transit=CALIBRATOR, random_sources=False))[0]
    truth = {**read_truth(Path(summary["truth"])), "path": Path(summary["truth"])}
    block = BlockRef(truth["block_id"], root / "block.zarr",
                     tuple(Path(f) for f in summary["files"]))
    first = _run_all(block, config)
    sums = {"ms": ms_digests(ms_path(block.block_id, config)),
            "solutions": _checksums(solutions_path(block.block_id, config), True),
            "store": _checksums(block.store, True)}
    second = _run_all(block, config)
    return {"config": config, "block": block, "truth": truth, "first": first,
            "second": second, "sums": sums}


def test_registry_holds_every_stage_behind_the_contract() -> None:
    # The image stage runs in tests/e2e/test_image_stage.py (tclean is too slow to run here
    # on every stage test), the mosaic stage in tests/integration/test_mosaic_stage.py, the
    # photometry stage in tests/integration/test_photometry_stage.py on synthetic image
    # products; their places and needs are checked like the others'.
    registered = (*ORDER, "image", "mosaic", "photometry")
    assert tuple(STAGES) == registered
    for name, stage in STAGES.items():
        assert isinstance(stage, Stage) and stage.name == name
        assert set(stage.needs) <= set(registered[:registered.index(name)])
    with pytest.raises(Exception, match="no stage 'variability'"):
        get_stage("variability")


def test_results_name_their_products_and_provenance(runs: dict) -> None:
    config, block = runs["config"], runs["block"]
    expected = {"ingest": ("block_store", block.store), "rephase": ("block_store", block.store),
                "flag": ("block_store", block.store),
                "calibrate_solve": ("solutions", solutions_path(block.block_id, config)),
                "calibrate_apply": ("block_store", block.store),
                "export": ("ms", ms_path(block.block_id, config))}
    for name, result in runs["first"].items():
        kind, path = expected[name]
        assert result.stage == name and result.block_id == block.block_id
        assert result.product(kind).path == path and path.is_dir()
        assert result.provenance.config_hash == config_hash(config)
        assert result.provenance.versions["numpy"] == np.__version__
        assert result.seconds > 0
        assert result.to_dict()["products"][0]["path"] == str(path)
    assert runs["first"]["ingest"].provenance.inputs == tuple(str(f) for f in block.files)
    assert runs["first"]["calibrate_apply"].provenance.inputs == (
        str(block.store), str(solutions_path(block.block_id, config)))


def test_ingest_and_rephase_figures_match_the_truth(runs: dict) -> None:
    truth, ingest = runs["truth"], runs["first"]["ingest"].figures
    assert ingest["subbands"] == 16 and ingest["missing_subbands"] == 0
    assert ingest["times"] == len(truth["time_unix"])
    assert ingest["rephased"] is True
    ds = block_node(open_block(runs["block"].store)).to_dataset(inherit=False)
    assert ds.VISIBILITY.shape == (ingest["times"], ingest["baselines"], ingest["channels"],
                                   ingest["polarizations"])
    # The default centre is the pointing (HA 0, pointing dec) at mid-block: the truth's
    # per-integration phase centres bracket it.
    rephase = runs["first"]["rephase"].figures
    ra = np.degrees(truth["phase_centre_icrs_ra_rad"])
    dec = np.degrees(truth["phase_centre_icrs_dec_rad"])
    assert min(ra) < rephase["ra_deg"] < max(ra)
    assert rephase["dec_deg"] == pytest.approx(np.mean(dec), abs=1e-3)


def test_flag_figures_are_the_stored_fractions(runs: dict) -> None:
    figures = runs["first"]["flag"].figures
    attrs = zarr.open_group(runs["block"].store / next(
        p.name for p in runs["block"].store.iterdir() if p.is_dir()), mode="r").attrs
    stored = attrs["contimg"]["flag_versions"]["rfi"]["fractions"]
    assert figures["flagged_fraction"] == stored["block"]
    for sb, value in stored["per_subband"].items():
        assert figures[f"flagged_fraction_sb{sb}"] == value
    # Autocorrelations are flagged but not counted; RFI is injected: some data flagged.
    assert 0.0 < figures["flagged_fraction"] < 0.5
    assert antenna_values(figures, FLAGGED) == (list(stored["per_antenna"]),
                                                list(stored["per_antenna"].values()))
    assert len(stored["per_antenna"]) == 48


def test_solve_figures_per_antenna_match_the_injected_gains(runs: dict) -> None:
    """The per-antenna amplitude and phase the dashboard plots, against the simulator's
    gain x bandpass (time gains averaged over the block) over the same unflagged samples,
    referenced to the reference antenna: phases within 1 deg; amplitudes within 2 % for 90 %
    of the antennas (the few with RFI injected solve a few % off; median within 0.5 %); an
    antenna without any solution is None."""
    block, config = runs["block"], runs["config"]
    solve = runs["first"]["calibrate_solve"].figures
    names, amp = antenna_values(solve, SOLUTION_AMP)
    _, phase = antenna_values(solve, SOLUTION_PHASE)
    _, snr = antenna_values(solve, SOLUTION_SNR)
    solutions = read_solutions(solutions_path(block.block_id, config))
    unsolved = solutions.GAIN_BLOCK_FLAG.values.all(axis=1)
    assert [a is None for a in amp] == unsolved.tolist() and unsolved.sum() < 3
    with h5py.File(runs["truth"]["path"], "r") as f:
        time_gains, bandpass, freq = f["time_gains"][()], f["bandpass"][()], f["freq_hz"][()]
    index = [int(n) - 1 for n in names]
    g = time_gains[index].mean(axis=1)[:, None, :] * bandpass[index][:, np.argsort(freq)]
    refant = names.index(solve["refant"])
    g = g * np.conj(g[refant]) / np.abs(g[refant])
    usable = ~(solutions.BANDPASS_FLAG.values | solutions.GAIN_BLOCK_FLAG.values[:, None, :])
    amp_error, phase_error = [], []
    for a in np.flatnonzero(~unsolved):
        true = g[a][usable[a]]
        amp_error.append(amp[a] / np.median(np.abs(true)) - 1.0)
        true_phase = np.degrees(np.angle(np.sum(true / np.abs(true))))
        phase_error.append((phase[a] - true_phase + 180.0) % 360.0 - 180.0)
    amp_error, phase_error = np.abs(amp_error), np.abs(phase_error)
    assert np.median(amp_error) < 0.005 and np.mean(amp_error < 0.02) >= 0.9
    assert phase_error.max() < 1.0
    assert min(s for s in snr if s is not None) > 50  # 3C147 transiting: bright


def test_solve_and_apply_figures_are_the_stored_ones(runs: dict) -> None:
    block, config = runs["block"], runs["config"]
    solve = runs["first"]["calibrate_solve"].figures
    prov = read_solutions(solutions_path(block.block_id, config)).attrs["contimg"]
    assert solve["calibrator"] == CALIBRATOR == prov["calibrator"]["name"]
    assert solve["calibrator_apparent_flux_jy"] == prov["calibrator"]["apparent_flux_jy"]
    assert solve["refant"] == prov["refant"]
    for key, value in prov["quality"].items():
        assert solve[key] == value
    assert solve["bandpass_median_snr"] > 50
    apply = runs["first"]["calibrate_apply"].figures
    record = block_node(open_block(block.store)).to_dataset(
        inherit=False).attrs["contimg"]["calibration"]
    assert apply["flagged_fraction"] == record["flagged_fraction"]
    assert apply["solutions_block"] == record["solutions_block"] == block.block_id
    assert runs["first"]["export"].figures["calibrated"] is True


def test_export_product_holds_the_corrected_data(runs: dict) -> None:
    from casacore.tables import table

    from contimg_dask.io.store.block_calibration import corrected_dataset

    result = runs["first"]["export"]
    ms = result.product("ms").path
    corrected = corrected_dataset(runs["block"].store).VISIBILITY_CORRECTED.values
    n_t, n_bl, _, n_p = corrected.shape
    with table(str(ms), ack=False) as main:
        assert main.nrows() == n_t * n_bl * 16  # one spectral window per subband
        rows = main.query("DATA_DESC_ID == 2")
        column = rows.getcol("CORRECTED_DATA").reshape(n_t, n_bl, -1, n_p)
    n_chan = corrected.shape[2] // 16
    np.testing.assert_array_equal(column, np.conj(corrected[:, :, 2 * n_chan:3 * n_chan]))
    assert result.figures["size_bytes"] == sum(
        p.stat().st_size for p in ms.rglob("*") if p.is_file())


def test_a_second_run_gives_the_same_products_and_figures(runs: dict) -> None:
    block, config = runs["block"], runs["config"]
    for name in ORDER:
        first, second = runs["first"][name], runs["second"][name]
        assert second.products == first.products
        assert second.figures == first.figures, name
    assert ms_digests(ms_path(block.block_id, config)) == runs["sums"]["ms"]
    assert _checksums(solutions_path(block.block_id, config), True) == \
        runs["sums"]["solutions"]
    assert _checksums(block.store, True) == runs["sums"]["store"]


def test_corrected_data_apply_the_gains_once_per_chunk(runs: dict, monkeypatch) -> None:
    """Computing the three corrected variables together runs the apply kernel once per
    chunk, and each variable is that kernel's output on the whole block."""
    import dask

    from contimg_dask.io.store import block_calibration
    from contimg_dask.ops.calibration import apply_gains

    store = runs["block"].store
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return apply_gains(*args, **kwargs)

    monkeypatch.setattr(block_calibration, "apply_gains", counted)
    corrected = block_calibration.corrected_dataset(store)
    names = list(corrected.data_vars)
    values = dask.compute(*(corrected[n].data for n in names), scheduler="sync")
    assert len(calls) == corrected.VISIBILITY_CORRECTED.data.npartitions
    node = block_node(open_block(store))
    calibration = block_calibration.read_block_calibration(node)
    ds = node.to_dataset(inherit=False)
    group = data_group(ds.attrs, calibration.data_group).names
    geometry = read_geometry(store)
    expected = apply_gains(group_visibilities_of(store, calibration.data_group),
                           ds[group["weight"]].values,
                           ds[group["flag"]].values, calibration.gain_t, calibration.bandpass,
                           geometry.ant1, geometry.ant2)
    for name, value, truth in zip(names, values, expected, strict=True):
        np.testing.assert_array_equal(value, truth, err_msg=name)


THIRD_PARTY_NOISE = (
    ("error", None, UnstableSpecificationWarning, "zarr"),
    ("error", None, ZarrUserWarning, "zarr"),
    ("error", "Recalculating uvw_array", UserWarning, "pyuvdata"),
)


def test_stage_runs_emit_no_third_party_warnings(runs: dict) -> None:
    """Flag, apply and export (MS and UVH5) with zarr's and pyuvdata's notes turned into
    errors, and every warning recorded: none from a third-party package. Our own warnings
    still show inside the quiet context."""
    block, config = runs["block"], runs["config"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for action, message, category, module in THIRD_PARTY_NOISE:
            warnings.filterwarnings(action, message=message or "", category=category,
                                    module=module)
        for stage in (get_stage("flag"), get_stage("calibrate_apply"), get_stage("export"),
                      ExportStage("uvh5")):
            stage.run(block, config)
        restore_flags(block.store, "rfi")
        with warnings.catch_warnings():
            quiet_zarr_strings()
            warnings.warn("our own note", UserWarning, stacklevel=1)
    site = Path(np.__file__).parents[1]
    assert [str(w.message) for w in caught if Path(w.filename).is_relative_to(site)] == []
    assert [str(w.message) for w in caught] == ["our own note"]


def test_json_logging_every_stderr_line_parses(runs: dict, tmp_path: Path) -> None:
    """`contimg flag` and `flag --restore` with JSON logging: every line on standard error
    is a JSON object."""
    import json
    import shutil
    import subprocess
    import sys

    store = shutil.copytree(runs["block"].store, tmp_path / "block.zarr")
    base = [sys.executable, "-m", "contimg_dask.cli.main", "--env", "testing", "--set",
            f"paths.root={tmp_path}", "--set", "logging.format=json", "--set",
            "logging.level=INFO"]
    lines = []
    for args in (["flag", str(store), "--version", "json"],
                 ["flag", str(store), "--restore", "rfi"]):
        run = subprocess.run([*base, *args], capture_output=True, text=True, check=True)
        lines += run.stderr.splitlines()
    records = [json.loads(line) for line in lines]
    assert any("flagged" in r["message"] for r in records)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_store_content_follows_its_declared_model(runs: dict) -> None:
    """What the stages wrote passes the data model's checks (solutions, calibration node,
    flag versions, data groups), as it is read back."""
    from contimg_dask.io.store.block_calibration import CALIBRATION_NODE as NODE
    from contimg_dask.io.store.block_view import open_block_view
    from contimg_dask.io.store.model import (
        CALIBRATION_NODE,
        FLAG_VERSION,
        SOLUTIONS,
        check_data_group,
    )

    block, config = runs["block"], runs["config"]
    assert SOLUTIONS.issues(read_solutions(solutions_path(block.block_id, config))) == []
    view = open_block_view(block.store)
    assert CALIBRATION_NODE.issues(view.node[NODE].to_dataset()) == []
    versions = view.provenance["flag_versions"]
    assert set(versions) == {"ingest", "rfi"}
    for name, record in versions.items():
        FLAG_VERSION.check(record, block.store, name)
    groups = {**view.attrs["data_groups"], **view.provenance["derived_groups"]}
    assert set(groups) == {"base", "rephased"}
    for name, entry in groups.items():
        check_data_group(entry, name, view.dataset.variables, block.store)


def _edit_attrs(group: Path, edit) -> None:
    """Change a zarr group's attributes in place (a damaged or foreign store)."""
    from contimg_dask.io.store.metadata import consolidate

    attrs = dict(zarr.open_group(group, mode="r").attrs)
    edit(attrs)
    zarr.open_group(group, mode="r+").attrs.put(attrs)
    consolidate(group.parent if group.name.endswith("_0") else group)


def test_malformed_store_content_is_refused_naming_store_and_field(runs: dict,
                                                                   tmp_path: Path) -> None:
    import shutil

    from contimg_dask.io.store.block_view import open_block_view
    from contimg_dask.io.store.model import StoreModelError
    from contimg_dask.io.store.solutions import write_solutions
    from contimg_dask.processing.flag import list_flag_versions

    block, config = runs["block"], runs["config"]
    solutions = shutil.copytree(solutions_path(block.block_id, config), tmp_path / "s.zarr")
    _edit_attrs(solutions, lambda a: a["contimg"].pop("refant"))
    with pytest.raises(StoreModelError, match=r"field refant is missing.*s\.zarr"):
        read_solutions(solutions)
    incomplete = read_solutions(solutions_path(block.block_id, config)).drop_vars("GAIN_BLOCK")
    with pytest.raises(StoreModelError, match=r"variable GAIN_BLOCK is missing.*new\.zarr"):
        write_solutions(incomplete, tmp_path / "new.zarr")
    assert not (tmp_path / "new.zarr").exists()

    store = shutil.copytree(block.store, tmp_path / "b.zarr")
    node = next(p for p in store.iterdir() if p.is_dir())
    _edit_attrs(node, lambda a: a["contimg"]["flag_versions"]["rfi"].pop("variable"))
    with pytest.raises(StoreModelError, match=r"flag version 'rfi': field variable is missing"
                                              r".*b\.zarr"):
        list_flag_versions(store)
    _edit_attrs(node, lambda a: a["contimg"]["derived_groups"]["rephased"].update(
        uvw="UVW_ELSEWHERE"))
    with pytest.raises(StoreModelError, match=r"'rephased' names variables the store lacks: "
                                              r"uvw = UVW_ELSEWHERE"):
        open_block_view(store, "rephased")


def test_block_store_docs_show_the_declared_model() -> None:
    """docs/block-store.md carries every model's own description, as declared."""
    from contimg_dask.io.store import model as store_model

    docs = (Path(__file__).parents[2] / "docs" / "block-store.md").read_text()
    for model in (store_model.SOLUTIONS, store_model.SOLUTIONS_PROVENANCE,
                  store_model.CALIBRATION_NODE, store_model.FLAG_VERSION,
                  store_model.DATA_GROUP):
        assert model.describe() in docs, model.name
