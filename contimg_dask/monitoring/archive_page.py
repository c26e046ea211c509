"""The archive's search page on the dashboard server: ``GET /archive`` (an HTML form and
the matching products; ``format=json`` for the same as JSON) and ``GET /archive/file``
(download of a product that is one file: FITS images and mosaics, PNG quick-looks, Parquet
tables). Read-only: the search reads the archive index, a download reads the product's
recorded file; nothing is converted or written (conversions on the fly stay with
``contimg archive get``, which writes its cache).

``monitoring`` sits below ``archive`` in the layers, so the search arrives as an
:class:`ArchiveReader` built by the command that serves the dashboard.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from tornado.web import RequestHandler

from contimg_dask.monitoring.access import refuse_without_token
from contimg_dask.utc import parse_utc_unix

#: The query parameters of /archive: name -> (parser, label, unit).
FIELDS: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "ra": (float, "RA", "deg"), "dec": (float, "Dec", "deg"),
    "radius": (float, "radius", "deg"), "from": (parse_utc_unix, "from", "UTC, ISO"),
    "to": (parse_utc_unix, "to", "UTC, ISO"), "strip": (float, "strip Dec", "deg"),
    "kind": (str, "kind", ""), "max_noise": (float, "max noise", "mJy/beam"),
}
PAGE_SIZE = 100
DOWNLOADABLE = (".fits", ".png", ".parquet", ".json", ".csv")


class ArchiveReader(Protocol):
    """What the page needs of the archive (contimg_dask.archive.reader.ArchiveReader)."""

    def search_page(self, **criteria: Any) -> dict[str, Any]: ...

    def path_of(self, product_id: str) -> str | None: ...


def criteria_from(values: dict[str, str]) -> dict[str, Any]:
    """The archive search criteria of the page's query parameters (ValueError naming the
    parameter when one does not parse)."""
    parsed: dict[str, Any] = {}
    for name, text in values.items():
        if name not in FIELDS:
            raise ValueError(f"unknown parameter {name!r} (known: {', '.join(FIELDS)})")
        try:
            parsed[name] = FIELDS[name][0](text)
        except ValueError as exc:
            parser = FIELDS[name][0]
            if parser is parse_utc_unix:
                raise ValueError(f"{name}: {exc}") from None
            raise ValueError(f"{name}={text!r} is not a {parser.__name__}") from None
    cone = [parsed.get(k) for k in ("ra", "dec", "radius")]
    if any(v is not None for v in cone) and None in cone:
        raise ValueError("a cone needs ra, dec and radius")
    return {"cone": tuple(cone) if cone[0] is not None else None,
            "time_from": parsed.get("from"), "time_to": parsed.get("to"),
            "strip_dec_deg": parsed.get("strip"), "kind": parsed.get("kind"),
            "max_noise_jy": parsed["max_noise"] / 1e3 if "max_noise" in parsed else None}


def _downloadable(entry: dict[str, Any]) -> bool:
    return Path(entry["path"]).suffix.lower() in DOWNLOADABLE


def render(values: dict[str, str], page: dict[str, Any], token: str | None) -> str:
    """The search page: the form (filled with ``values``) and the products found."""
    inputs = "".join(
        f"<label>{label}{f' ({unit})' if unit else ''} <input name='{name}' size='10' "
        f"value='{html.escape(values.get(name, ''))}'></label> "
        for name, (_, label, unit) in FIELDS.items())
    hidden = f"<input type='hidden' name='token' value='{html.escape(token)}'>" if token else ""
    suffix = f"&{urlencode({'token': token})}" if token else ""
    rows = []
    for e in page["products"]:
        start = dt.datetime.fromtimestamp(e["time_start"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        noise = "" if e["noise_jy"] is None else f"{1e3 * e['noise_jy']:.3f}"
        link = (f"<a href='/archive/file?product={quote(e['product_id'], safe='')}{suffix}'>"
                "download</a>" if _downloadable(e) else
                f"<code>contimg archive get {html.escape(e['product_id'])} --format ms</code>")
        rows.append(f"<tr><td>{html.escape(e['product_id'])}</td><td>{html.escape(e['kind'])}"
                    f"</td><td>{e['ra_deg']:.4f}</td><td>{e['dec_deg']:.4f}</td><td>"
                    f"{e['strip_dec_deg']:.1f}</td><td>{start}</td><td>{noise}</td><td>{link}"
                    "</td></tr>")
    shown = len(page["products"])
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>contimg archive</title>"
            "</head><body><h1>Archive search</h1><p><a href='/'>dashboard</a></p>"
            f"<form method='get' action='/archive'>{inputs}{hidden}"
            "<button type='submit'>search</button></form>"
            f"<p id='count'>{shown} of {page['total']} products</p>"
            "<table id='products' border='1'><tr><th>product</th><th>kind</th><th>RA</th>"
            "<th>Dec</th><th>strip</th><th>start (UTC)</th><th>noise mJy/beam</th>"
            f"<th>get</th></tr>{''.join(rows)}</table></body></html>")


class _ArchiveHandler(RequestHandler):
    def initialize(self, archive: ArchiveReader, token: str | None) -> None:
        self.archive, self.token = archive, token

    def prepare(self) -> None:
        refuse_without_token(self, self.token)

    def _values(self, *ignored: str) -> dict[str, str]:
        return {k: self.get_query_argument(k) for k in self.request.query_arguments
                if k not in ("token", *ignored) and self.get_query_argument(k) != ""}

    def _error(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"error": message})


class ArchiveSearchHandler(_ArchiveHandler):
    """``GET /archive?ra=&dec=&radius=&from=&to=&strip=&kind=&max_noise=&offset=&format=``."""

    def get(self) -> None:
        values = self._values("offset", "format")
        try:
            offset = int(self.get_query_argument("offset", "0"))
            page = self.archive.search_page(**criteria_from(values), limit=PAGE_SIZE,
                                            offset=offset)
        except ValueError as exc:
            self._error(400, str(exc))
            return
        if self.get_query_argument("format", "html") == "json":
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(page))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(render(values, page, self.token))


class ArchiveFileHandler(_ArchiveHandler):
    """``GET /archive/file?product=ID``: the product's file, if it is one file of a
    downloadable kind; 404 for a product the archive does not hold."""

    def get(self) -> None:
        product = self.get_query_argument("product", "")
        path = self.archive.path_of(product)
        if path is None:
            self._error(404, f"no product {product!r} in the archive")
            return
        file = Path(path)
        if file.suffix.lower() not in DOWNLOADABLE or not file.is_file():
            self._error(409, f"{product} is not one file here: use contimg archive get "
                             f"{product} --format ms|uvfits|miriad|uvh5|fits|png")
            return
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f"attachment; filename=\"{file.name}\"")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                self.write(chunk)
        self.finish()
