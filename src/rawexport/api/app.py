"""The HTTP API assembled: routes, middleware and error handlers around `exports.Api`
(the export endpoints), the collectors, downloads, the console, /docs and /metrics."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from rawexport.api.access import RequestMetrics
from rawexport.api.assets import WebAssets
from rawexport.api.collect import collector_routes
from rawexport.api.console import console_routes
from rawexport.api.docs import docs_routes
from rawexport.api.downloads import Downloads
from rawexport.api.errors import error_response, handle_error
from rawexport.api.exports import Api
from rawexport.api.headers import SecurityHeaders, covered, security_headers
from rawexport.api.health import PublicPath
from rawexport.api.hot import Core, HotPaths, endpoint
from rawexport.api.limits import client_gone
from rawexport.api.ratelimit import RateLimiter, node_limiter
from rawexport.blobs import BlobStore
from rawexport.blobs.links import SECRET_NAME
from rawexport.catalog import Catalog, DatabaseError
from rawexport.catalog.metrics import catalog_metrics
from rawexport.errors import RawexportError
from rawexport.ingest.group_commit import Ingestor, make_ingestor
from rawexport.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rawexport.metrics import Metrics
from rawexport.settings import Settings
from rawexport.timeutil import (
    now_ms,
)

log = logging.getLogger("rawexport.api")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, exc.headers)


async def _server_error(request: Request, exc: Exception, prefix: str = "") -> Response:
    """Any unexpected exception: one JSON log line with its traceback and a request id;
    the client gets the id and no traceback. `prefix`: the path of `public_url`."""
    request_id = uuid.uuid4().hex[:16]
    log.error(
        "unhandled error on %s %s (request %s)",
        request.method,
        request.url.path,
        request_id,
        exc_info=exc,
        extra={"event": "error", "request_id": request_id},
    )
    # Sent from outside every middleware: a console or /docs answer gets its headers here.
    path = request.scope["path"]  # the whole path (the router rewrote root_path on its way)
    headers = security_headers(path, prefix) if covered(path, prefix) else None
    return error_response(500, "Internal Server Error", headers, request_id=request_id)


def create_app(
    settings: Settings,
    catalog: Catalog,
    blobs: BlobStore,
    *,
    clock: Callable[[], int] = now_ms,
    limiter: RateLimiter | None = None,
    ingestor: Ingestor | None = None,
    metrics: Metrics | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    auth_limiter: RateLimiter | None = None,
) -> Starlette:
    """The ASGI app. `blobs` is the local blob store its download links point at."""
    limiter = limiter or node_limiter(settings)
    collector = ingestor or make_ingestor(settings, catalog)
    metrics = metrics or catalog_metrics(catalog)

    async def metrics_endpoint(request: Request) -> Response:
        body = await run_in_threadpool(metrics.render)
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    api = Api(settings, catalog, limiter, clock, sleep, metrics, auth_limiter)
    assets = WebAssets.find(settings.web_assets)
    assets.warn()
    downloads = Downloads(
        catalog, blobs, catalog.secret(SECRET_NAME), clock, settings.cache_seconds
    )
    hot: list[tuple[Route, Core]] = [
        (Route(path, endpoint(core), methods=["GET"]), core)
        for path, core in [
            ("/v2/insights/{export_type}/{data_type}/{ai}/{export_date}.json", api.v2_one),
            ("/v2/insights/{export_type}/{ai}/{export_date}.json", api.v2_all),
            ("/insights/{ai}/{date}.json", api.v1),
            ("/healthz", api.healthz),
        ]
    ]
    routes = [
        # HotPaths answers GETs of these before the router would; they must come first.
        *(route for route, _ in hot),
        Route("/auth/token", api.auth_token, methods=["POST"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", api.openapi_json, methods=["GET"]),
        *docs_routes(api.openapi, settings.base_url, assets),
        *collector_routes(settings, catalog, collector, metrics),
        *console_routes(settings, catalog, blobs, clock, limiter, sleep, assets),
        # Last, and only matching export keys: it must not shadow the routes above.
        Route("/{key:exportkey}", downloads.serve, methods=["GET", "HEAD"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with collector:  # on shutdown, commits what is queued, then stops the writer
            yield

    middleware = [
        Middleware(HotPaths, routes=hot, metrics=metrics),
        Middleware(RequestMetrics, metrics=metrics),
        Middleware(SecurityHeaders),  # innermost: it sees the router's 404 and 405 too
    ]
    prefix = urlsplit(settings.base_url).path.rstrip("/")
    if prefix:
        middleware.insert(0, Middleware(PublicPath, prefix=prefix))
    return Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: _http_error,
            ClientDisconnect: client_gone,  # a client gone mid-body: no traceback, no 500
            # The error tree's answers (4xx, 503 for an outage) and the catalog's outages
            # (503); what is none of these goes on to the 500 below.
            RawexportError: handle_error,
            DatabaseError: handle_error,
            Exception: functools.partial(_server_error, prefix=prefix),
        },
        lifespan=lifespan,
        middleware=middleware,
    )
