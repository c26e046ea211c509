"""The archive's search page on the dashboard server (issue 19: "the same search on a
dashboard page, read-only, with downloads"), served by a real DashboardThread and read over
HTTP: the search answers what ``archive.catalogue.search_page`` answers, a file product
downloads byte for byte, a directory product or an unknown id is refused with a reason,
bad parameters name themselves, and nothing but GET is served."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from contimg_dask.archive.catalogue import search_page
from contimg_dask.archive.index import open_archive_index
from contimg_dask.archive.reader import ArchiveReader
from contimg_dask.archive.records import ArchiveEntry
from contimg_dask.monitoring.server import DashboardThread
from tests.dashboard_support import free_port
from tests.helpers import make_config, without_disk_alerts

T0 = 1.78e9  # Unix s


def _get(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def archive(tmp_path: Path) -> tuple[object, dict[str, Path]]:
    config = make_config(tmp_path, **without_disk_alerts(tmp_path))
    image = tmp_path / "b1.image.pbcor.fits"
    image.write_bytes(b"SIMPLE  =                    T" + bytes(range(256)) * 20)
    store = tmp_path / "b1.zarr"
    store.mkdir()
    entries = [
        ArchiveEntry(product_id="b1/image_pbcor", kind="image_pbcor", path=str(image),
                     block_id="b1", collection="strip+16.1/2026-05-29/b1", ra_deg=80.3,
                     dec_deg=16.6, strip_dec_deg=16.1, time_start=T0, time_end=T0 + 309,
                     noise_jy=4.9e-3),
        ArchiveEntry(product_id="b1/block_store", kind="block_store", path=str(store),
                     block_id="b1", collection="strip+16.1/2026-05-29/b1", ra_deg=80.3,
                     dec_deg=16.6, strip_dec_deg=16.1, time_start=T0, time_end=T0 + 309),
        ArchiveEntry(product_id="b9/image_pbcor", kind="image_pbcor", path=str(image),
                     block_id="b9", collection="strip+71.6/2026-05-30/b9", ra_deg=200.0,
                     dec_deg=71.0, strip_dec_deg=71.6, time_start=T0 + 86400,
                     time_end=T0 + 86709, noise_jy=2.0e-3),
    ]
    index = open_archive_index(config)
    index.add(entries)
    index.close()
    return config, {"image": image}


def test_search_page_and_downloads(archive: tuple[object, dict[str, Path]]) -> None:
    config, files = archive
    port = free_port()
    dashboard = DashboardThread(config, "127.0.0.1", port,
                                archive=ArchiveReader(config)).start()
    base = f"http://127.0.0.1:{port}"
    try:
        # JSON: the catalogue's own answer, for a cone around the first block only.
        status, body = _get(f"{base}/archive?ra=80.3&dec=16.6&radius=1&format=json")
        assert status == 200
        page = json.loads(body)
        assert page == search_page(config, cone=(80.3, 16.6, 1.0), limit=100, offset=0)
        assert sorted(p["product_id"] for p in page["products"]) == [
            "b1/block_store", "b1/image_pbcor"]
        # HTML: the form and the table, noise in mJy/beam, a download link for the FITS
        # file and the archive command for the store.
        status, body = _get(f"{base}/archive?kind=image_pbcor&max_noise=3")
        text = body.decode()
        assert status == 200 and "1 of 1 products" in text
        assert "b9/image_pbcor" in text and "b1/image_pbcor" not in text
        assert "2.000" in text
        status, body = _get(f"{base}/archive?strip=16.1")
        text = body.decode()
        assert "/archive/file?product=b1%2Fimage_pbcor" in text
        assert "contimg archive get b1/block_store --format ms" in text
        # Downloads: the file byte for byte; a directory product and unknown ids refused.
        status, body = _get(f"{base}/archive/file?product=b1%2Fimage_pbcor")
        assert status == 200 and body == files["image"].read_bytes()
        status, body = _get(f"{base}/archive/file?product=b1%2Fblock_store")
        assert status == 409 and b"contimg archive get b1/block_store" in body
        status, body = _get(f"{base}/archive/file?product=..%2F..%2Fetc%2Fpasswd")
        assert status == 404
        # Bad parameters name themselves; only GET is served.
        status, body = _get(f"{base}/archive?ra=abc&dec=1&radius=1")
        assert status == 400 and b"ra='abc'" in body
        status, body = _get(f"{base}/archive?ra=10")
        assert status == 400 and b"ra, dec and radius" in body
        status, body = _get(f"{base}/archive?colour=red")
        assert status == 400 and b"colour" in body
        assert _get(f"{base}/archive", method="POST")[0] == 405
    finally:
        dashboard.stop()


def test_search_page_needs_the_token_when_one_is_set(
        archive: tuple[object, dict[str, Path]]) -> None:
    config, _ = archive
    config = config.model_copy(update={"monitoring": config.monitoring.model_copy(update={
        "dashboard": config.monitoring.dashboard.model_copy(update={
            "access_token": SecretStr("s3cret")})})})
    port = free_port()
    dashboard = DashboardThread(config, "127.0.0.1", port,
                                archive=ArchiveReader(config)).start()
    base = f"http://127.0.0.1:{port}"
    try:
        assert _get(f"{base}/archive?kind=image_pbcor")[0] == 403
        assert _get(f"{base}/archive/file?product=b1%2Fimage_pbcor")[0] == 403
        status, body = _get(f"{base}/archive?kind=image_pbcor&token=s3cret")
        assert status == 200 and b"token=s3cret" in body  # the links carry it on
    finally:
        dashboard.stop()
