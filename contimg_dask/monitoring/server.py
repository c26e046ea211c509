"""The dashboard server: Bokeh's (tornado) server with the page at ``/`` and read-only
endpoints beside it: ``/health`` (JSON; 200, or 503 when a check is red or the state store
has not answered for a while), ``/metrics`` (Prometheus text), and the archive's search
page ``/archive`` with downloads of file products (monitoring/archive_page.py). Every
handler answers GET only: nothing served changes state or runs anything.

It binds to ``monitoring.dashboard.host`` (127.0.0.1 by default). Any other address requires
``monitoring.dashboard.access_token``: then every request (page, websocket, ``/health``,
``/metrics``, ``/archive``) must carry it, as ``?token=``, an ``Authorization: Bearer``
header, or the cookie the page sets after a first ``?token=`` visit.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.server.auth_provider import AuthProvider
from bokeh.server.server import Server
from tornado.web import RequestHandler

from contimg_dask.config import PipelineConfig
from contimg_dask.errors import ConfigError
from contimg_dask.logs import get_logger
from contimg_dask.monitoring.access import (
    COOKIE,
    is_loopback,
    presented_token,
    refuse_without_token,
)
from contimg_dask.monitoring.archive_page import (
    ArchiveFileHandler,
    ArchiveReader,
    ArchiveSearchHandler,
)
from contimg_dask.monitoring.exposition import MetricsText
from contimg_dask.monitoring.health import RED
from contimg_dask.monitoring.page import make_document
from contimg_dask.monitoring.page_data import PageDataCache
from contimg_dask.monitoring.snapshot import LightCurveReader, SnapshotService

log = get_logger(__name__)


class TokenAuth(AuthProvider):
    """Bokeh's hook for the page and its websocket: the request must present ``token``."""

    def __init__(self, token: str) -> None:
        self.token = token
        super().__init__()

    def user(self, handler: RequestHandler) -> str | None:
        presented = presented_token(handler)
        if presented is None or not hmac.compare_digest(presented, self.token):
            return None
        if handler.get_query_argument("token", None):
            handler.set_cookie(COOKIE, presented, httponly=True, samesite="Strict")
        return "operator"

    @property
    def get_user(self) -> Callable[[Any], str | None]:
        return self.user

    @property
    def login_url(self) -> str:
        return "/denied"

    @property
    def login_handler(self) -> type[RequestHandler]:
        return DeniedHandler


class DeniedHandler(RequestHandler):
    """Where Bokeh sends a page request without the token."""

    def get(self) -> None:
        self.set_status(403)
        self.finish({"error": "this dashboard requires its access token (?token=...)"})


class ReadOnlyHandler(RequestHandler):
    """Base of ``/health`` and ``/metrics``: GET only, the token when one is configured,
    and no query parameters but ``token``."""

    def initialize(self, service: SnapshotService, token: str | None,
                   metrics: MetricsText) -> None:
        self.service, self.token, self.metrics = service, token, metrics

    def prepare(self) -> None:
        if refuse_without_token(self, self.token):
            return
        unknown = sorted(set(self.request.query_arguments) - {"token"})
        if unknown:
            self.set_status(400)
            self.finish({"error": f"{self.request.path} takes no query parameters "
                                  f"(got {', '.join(unknown)})"})


class HealthHandler(ReadOnlyHandler):
    def get(self) -> None:
        snap = self.service.latest
        stale = self.service.stale()
        body = {"status": RED if stale else snap.overall, "at": snap.at,
                "age_s": round(self.service.age_s(), 3),
                "checks": [c.to_dict() for c in snap.health]}
        if stale:
            body["checks"].append({"name": "monitor", "status": RED,
                                   "reason": "the state store has not answered for "
                                             f"{body['age_s']:.0f} s"})
        self.set_status(503 if body["status"] == RED else 200)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


class MetricsHandler(ReadOnlyHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.metrics())


def access_token(config: PipelineConfig, host: str) -> str | None:
    """The token the server requires (None on loopback without one); refuses a non-loopback
    address without one."""
    secret = config.monitoring.dashboard.access_token
    token = secret.get_secret_value() if secret else None
    if token is None and not is_loopback(host):
        raise ConfigError(f"the dashboard binds to {host}, not this machine only: set "
                          "monitoring.dashboard.access_token (environment variable "
                          "CONTIMG_MONITORING__DASHBOARD__ACCESS_TOKEN) or use --host "
                          "127.0.0.1", key="monitoring.dashboard.access_token")
    return token


def build_server(config: PipelineConfig, host: str, port: int,
                 service: SnapshotService, archive: ArchiveReader | None = None) -> Server:
    """The Bokeh server (not yet started) serving ``service``'s snapshots, and the archive's
    search page when ``archive`` is given."""
    token = access_token(config, host)
    kwargs = {"service": service, "token": token,
              "metrics": MetricsText(lambda: service.latest, time.time)}
    pages: list[tuple[str, Any, dict[str, Any]]] = []
    if archive is not None:
        pages = [(r"/archive", ArchiveSearchHandler, {"archive": archive, "token": token}),
                 (r"/archive/file", ArchiveFileHandler, {"archive": archive, "token": token})]
    origins = [f"{host}:{port}"] + ([f"localhost:{port}", f"127.0.0.1:{port}"]
                                    if is_loopback(host) else [])
    page_data = PageDataCache(lambda: service.latest)
    app = Application(FunctionHandler(lambda doc: make_document(doc, config, page_data)))
    options: dict[str, Any] = {}
    if token is not None:
        options["auth_provider"] = TokenAuth(token)
    return Server({"/": app}, address=host, port=port, allow_websocket_origin=origins,
                  extra_patterns=[(r"/health", HealthHandler, kwargs),
                                  (r"/metrics", MetricsHandler, kwargs), *pages],
                  num_procs=1, **options)


class DashboardThread:
    """The dashboard served from a daemon thread of the calling process, on an event loop of
    its own (for ``contimg watch --dashboard``): :meth:`start` returns once it listens.
    ``light_curves``: the candidates' light-curve reader (see SnapshotBuilder)."""

    def __init__(self, config: PipelineConfig, host: str, port: int,
                 light_curves: LightCurveReader | None = None,
                 archive: ArchiveReader | None = None) -> None:
        self.config, self.host, self.port = config, host, port
        self.light_curves, self.archive = light_curves, archive
        self.server: Server | None = None
        self.service: SnapshotService | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dashboard", daemon=True)

    def start(self, timeout_s: float = 60.0) -> DashboardThread:
        access_token(self.config, self.host)  # refuse before starting anything
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"the dashboard did not start within {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        try:
            self.service = SnapshotService(self.config, self.light_curves).start()
            self.server = build_server(self.config, self.host, self.port, self.service,
                                       self.archive)
            self.server.start()
        except BaseException as exc:  # handed to start()'s caller
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.server.io_loop.start()
        self.server.stop()
        asyncio.get_event_loop().close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.io_loop.add_callback(self.server.io_loop.stop)
            self._thread.join(timeout=30)
        if self.service is not None:
            self.service.stop()


def run_dashboard(config: PipelineConfig, host: str, port: int,
                  light_curves: LightCurveReader | None = None,
                  archive: ArchiveReader | None = None) -> None:
    """Serve the dashboard until interrupted (``contimg dashboard``); ``light_curves`` reads
    the candidates' light curves (see SnapshotBuilder), ``archive`` serves the search page."""
    token = access_token(config, host)
    service = SnapshotService(config, light_curves).start()
    server = build_server(config, host, port, service, archive)
    server.start()
    protection = ("access token required on every request" if token
                  else "no access token: this machine only")
    log.info("dashboard at http://%s:%d/ (%s); /health and /metrics beside it",
                host, port, protection)
    print(f"dashboard at http://{host}:{port}/ ({protection}); /health, /metrics", flush=True)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        service.stop()
