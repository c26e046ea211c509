"""The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver)
through Selenium against ``contimg dashboard`` in its own process over a SQLite state store
that the test writes to as the pipeline would.

- the page loads with every view and no SEVERE console message;
- a block recorded during the test appears in the Processing table within 5 s;
- an alert raised by a rule (the evaluator, as the pipeline runs it) appears in Active
  alerts, then leaves it for Recently resolved when the rule resolves;
- the per-antenna heatmaps hold the fractions, amplitudes and phases the stages reported
  (through the orchestrator's events), cell by cell; the Dask workers' health line shows
  the recorded workers; the newest candidate's light curve has the points of the
  measurement tables, and selecting another candidate in the browser shows its own;
- screenshots: one as a test artifact (tmp), and docs/img/dashboard.png when
  UPDATE_DOCS_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contimg_dask.monitoring import AlertEvaluator
from contimg_dask.photometry.tables import photometry_root
from contimg_dask.state import MetricSample, open_state_store
from tests.dashboard_support import (
    REPO,
    DashboardProcess,
    antenna_flag_fractions,
    antenna_solutions,
    heartbeats,
    record_block,
    write_light_curves,
)
from tests.helpers import make_config

webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (installed by .ci/run)")]

#: The named root model of every view (monitoring/page.py).
VIEWS = ("links", "health", "alerts_active", "alerts_resolved", "latency", "blocks_per_hour",
         "backlog", "stage_timings", "flag_fraction", "flag_heatmap", "calibration_snr",
         "image_noise", "dynamic_range", "blocks", "block_detail", "block_timeline",
         "failures", "science", "candidates", "solution_amp", "solution_phase",
         "light_curve")


@pytest.fixture
def browser() -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1600,4200"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def model_js(name: str, expression: str) -> str:
    """JavaScript evaluating ``expression`` on the page's model ``name`` (as ``m``)."""
    return ("const d = window.Bokeh && Bokeh.documents[0];"
            f"const m = d && d.get_model_by_name({name!r});"
            f"return m ? ({expression}) : null;")


def wait_js(driver: object, script: str, timeout_s: float) -> float:
    """Seconds until ``script`` returns true in the page."""
    start = time.monotonic()
    while not driver.execute_script(script):
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s: {script}")
        time.sleep(0.05)
    return time.monotonic() - start


def column_of(driver: object, table: str, field: str) -> list:
    return driver.execute_script(model_js(table, f"Array.from(m.source.data[{field!r}])"))


def heatmap_cell(driver: object, name: str, block: str, antenna: str) -> float | None:
    """The value of heatmap ``name``'s cell (block, antenna) in the page (None: NaN)."""
    return driver.execute_script(model_js(name, (
        "(() => { const d = m.renderers[0].data_source.data;"
        f" for (let i = 0; i < d.block.length; i++) if (d.block[i] == {block!r} &&"
        f" d.antenna[i] == {antenna!r}) return isNaN(d.value[i]) ? 'nan' : d.value[i];"
        " return 'missing'; })()")))


def curve_data(driver: object) -> dict:
    return driver.execute_script(model_js("light_curve", (
        "{title: m.title.text, t: Array.from(m.renderers[1].data_source.data.t),"
        " flux: Array.from(m.renderers[1].data_source.data.flux),"
        " limits: Array.from(m.renderers[2].data_source.data.limit)}")))


#: Light curves written to the photometry tables: MJD, flux (Jy), error (Jy), upper limit.
CURVES = {"J1234+4321": ([60640.10, 60640.20, 60640.30, 60640.40],
                         [0.012, 0.011, 0.004, 0.0], [0.001] * 4, [None, None, None, 0.003]),
          "J0101+0101": ([60640.15, 60640.25], [0.050, 0.020], [0.002, 0.002], [None, None])}


def test_dashboard_in_chromium(tmp_path: Path, browser: object) -> None:
    config = make_config(tmp_path)
    products = tmp_path / "products"
    products.mkdir()
    store = open_state_store(config)
    now = time.time()
    heartbeats(store, now)
    record_block(store, "2026-11-30T09:54:59", now - 700.0, latency_s=240.0,
                 products_dir=products)
    record_block(store, "2026-11-30T10:00:08", now - 400.0, latency_s=290.0, flagged=0.08,
                 products_dir=products)
    record_block(store, "2026-11-30T10:05:17", now - 100.0, fail_stage="image")
    store.emit("candidate", {"name": "J0101+0101", "kind": "ese",
                             "metrics": {"v": 0.6, "eta": 30.0}})
    store.emit("candidate", {"name": "J1234+4321", "kind": "variable",
                             "metrics": {"v": 0.31, "eta": 12.0}})
    write_light_curves(photometry_root(config), CURVES)
    dashboard = DashboardProcess(tmp_path, {}).start()
    try:
        browser.get(dashboard.url + "/")
        wait_js(browser, model_js("blocks", "m.source.data.block_id.length == 3"), 30.0)
        present = browser.execute_script(
            "const d = Bokeh.documents[0];"
            f"return {list(VIEWS)!r}.filter(n => d.get_model_by_name(n) !== null);")
        assert present == list(VIEWS)
        health = browser.execute_script(model_js("health", "m.text"))
        assert "watcher" in health and "pipeline" in health and "sqlite" in health
        failures = column_of(browser, "failures", "stage")
        assert failures == ["image"]
        assert "J1234+4321" in column_of(browser, "candidates", "name")
        assert "data:image/png;base64," in browser.execute_script(model_js("science", "m.text"))
        assert "dask_workers" in health and "2 workers, fullest at 30 %" in health

        # heatmaps: the cells hold what the stages reported for that block and antenna
        block = "2026-11-30T10:00:08"
        fractions = antenna_flag_fractions(0.08)
        wait_js(browser, model_js("flag_heatmap",
                                  "m.renderers[0].data_source.data.block.length == 3 * 96"), 5.0)
        for antenna in ("1", "7", "50", "96"):
            assert heatmap_cell(browser, "flag_heatmap", block, antenna) == pytest.approx(
                fractions[int(antenna) - 1], abs=1e-12)
        amp, phase, _ = antenna_solutions(0.08)
        for antenna in ("1", "12", "96"):
            k = int(antenna) - 1
            assert heatmap_cell(browser, "solution_amp", block, antenna) == pytest.approx(
                amp[k], abs=1e-12)
            assert heatmap_cell(browser, "solution_phase", block, antenna) == pytest.approx(
                phase[k], abs=1e-12)
        assert heatmap_cell(browser, "solution_amp", block, "7") == "nan"

        # light curves: the newest candidate's by default, another one once selected
        mjd, flux, _, upper = CURVES["J1234+4321"]
        shown = curve_data(browser)
        assert shown["title"].startswith("Light curve of J1234+4321 (4 epochs)")
        assert shown["t"] == pytest.approx([86_400_000.0 * (t - 40587.0) for t in mjd])
        assert shown["flux"] == pytest.approx([1e3 * f for f in flux])
        assert shown["limits"] == pytest.approx([1e3 * u for u in upper if u is not None])
        index = column_of(browser, "candidates", "name").index("J0101+0101")
        browser.execute_script(model_js("candidates", f"m.source.selected.indices = [{index}]"))
        wait_js(browser, model_js("light_curve", "m.title.text.includes('J0101+0101')"), 5.0)
        assert curve_data(browser)["flux"] == pytest.approx([50.0, 20.0])

        # a block processed now appears within 5 s
        last = time.time()
        record_block(store, "2026-11-30T10:10:26", last, latency_s=260.0)
        took = wait_js(browser, model_js(
            "blocks", "m.source.data.block_id.includes('2026-11-30T10:10:26')"), 5.0)
        print(f"new block shown after {took:.2f} s")

        # an alert raised by the latency rule (over 309 s for 15 min) appears, then clears;
        # the evaluator's clock runs 16 min ahead, through blocks over budget after `last`
        store.record_metrics(MetricSample("block_latency_s", 400.0, last + 1.0 + 60.0 * i)
                             for i in range(17))
        t = last + 1.0 + 960.0
        evaluator = AlertEvaluator(store, config)
        assert "latency_over_budget" in [a["rule"] for a in evaluator.evaluate(t)]
        wait_js(browser, model_js(
            "alerts_active", "m.source.data.rule.includes('latency_over_budget')"), 5.0)
        browser.save_screenshot(str(tmp_path / "dashboard.png"))
        if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
            browser.save_screenshot(str(REPO / "docs" / "img" / "dashboard.png"))
        store.record_metrics([MetricSample("block_latency_s", 250.0, t + 1.0)])
        assert "latency_over_budget" in [a["rule"] for a in evaluator.evaluate(t + 2.0)]
        wait_js(browser, model_js(
            "alerts_resolved", "m.source.data.rule.includes('latency_over_budget')"), 5.0)
        assert "latency_over_budget" not in column_of(browser, "alerts_active", "rule")

        # the block detail follows ?block=; an unknown parameter is reported, not applied
        browser.get(dashboard.url + "/?block=2026-11-30T10:00:08&rm=1")
        wait_js(browser, model_js("block_detail", "m.text.includes('2026-11-30T10:00:08')"),
                30.0)
        assert "unknown query parameter 'rm'" in browser.execute_script(
            model_js("notice", "m.text"))

        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
        assert (tmp_path / "dashboard.png").stat().st_size > 50_000
    finally:
        dashboard.stop()
        store.close()
