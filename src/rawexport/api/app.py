"""The HTTP API: /auth/token, the v1 and v2 export endpoints, downloads, health, OpenAPI."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from rawexport.api import auth, openapi
from rawexport.api.access import RequestMetrics
from rawexport.api.assets import WebAssets
from rawexport.api.cache import Fresh, Loads, Replies
from rawexport.api.collect import collector_routes
from rawexport.api.console import console_routes
from rawexport.api.docs import docs_routes
from rawexport.api.downloads import Downloads
from rawexport.api.envelopes import (
    BAD_PARAM,
    JSON,
    UNAUTHORIZED,
    BadParam,
    error_header,
    expire_param,
    export_window,
    parse_expire,
    too_many,
    too_many_attempts,
    v2_envelope,
    wants_extras,
)
from rawexport.api.errors import error_response, handle_error
from rawexport.api.headers import SecurityHeaders, covered, security_headers
from rawexport.api.health import HEALTHY, UNHEALTHY, Health, PublicPath
from rawexport.api.hot import Core, HotPaths, Reply, endpoint
from rawexport.api.insights import ERROR, FINISHED, NOT_EXISTS, Answer, Insights
from rawexport.api.limits import client_gone
from rawexport.api.peers import Peers
from rawexport.api.ratelimit import RateLimiter, Turn, node_auth_limiter, node_limiter
from rawexport.blobs import BlobStore
from rawexport.blobs.links import SECRET_NAME
from rawexport.catalog import Catalog, DatabaseError, Project
from rawexport.catalog.metrics import catalog_metrics
from rawexport.errors import RawexportError
from rawexport.ingest.group_commit import Ingestor, make_ingestor
from rawexport.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rawexport.metrics import Metrics
from rawexport.schema import DATA_TYPE_NAMES, V1_TYPE_NAMES
from rawexport.settings import Settings
from rawexport.timeutil import (
    BadDate,
    Window,
    now_ms,
    parse_v1_date,
)

log = logging.getLogger("rawexport.api")


class Api:
    """The handlers; each is thin and calls auth, insights or downloads."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        limiter: RateLimiter,
        clock: Callable[[], int],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics | None = None,
        auth_limiter: RateLimiter | None = None,
    ) -> None:
        self.auth_limiter = auth_limiter or node_auth_limiter(settings)
        self.peers = Peers(settings.trusted_proxies)
        self.settings = settings
        self.catalog = catalog
        self.limiter = limiter
        self.clock = clock
        self.sleep = sleep
        self.metrics = metrics
        secret = catalog.secret(SECRET_NAME)
        self.insights = Insights(catalog, settings.base_url, secret, settings.cache_seconds)
        self.credentials = auth.Credentials(catalog, settings.cache_seconds)
        self.projects: Fresh[Project] = Fresh(lambda: catalog.generation, settings.cache_seconds)
        self.replies: Replies[tuple[Reply, str]] = Replies(lambda: catalog.generation)
        self.health = Health(catalog)
        self.loads = Loads()
        self.openapi = openapi.document(settings.base_url)

    # ---- /auth/token -----------------------------------------------------------------

    async def auth_token(self, request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > auth.MAX_AUTH_BODY:
                return error_response(413, "Payload Too Large")
        params = auth.parse_auth_params(request.query_params, bytes(body))
        client_id = request.headers.get("x-client-id")
        # Every attempt, signed right or not, takes a turn of its client's address: guesses
        # cannot run fast. Only a correctly signed one takes a turn of its key too: one
        # captured request cannot mint codes without end, and bogus attempts with someone's
        # public key (from other addresses) never delay the key's owner.
        turn = self.auth_limiter.take(f"addr:{self.peers.limit_key(request)}")
        if not await self._wait_turn(turn):
            return too_many_attempts(turn)
        try:
            key_pair = await run_in_threadpool(
                auth.verify, self.catalog, self.settings, params, client_id, self.clock()
            )
        except auth.Unauthorized:
            return UNAUTHORIZED.response()
        turn = self.auth_limiter.take(f"key:{key_pair.id}")
        if not await self._wait_turn(turn):
            return too_many_attempts(turn)
        code = await run_in_threadpool(
            auth.issue_code, self.catalog, self.settings, key_pair, self.clock()
        )
        return JSON({"status": "success", "code": code})

    async def _wait_turn(self, turn: Turn) -> bool:
        """Wait for an admitted turn (True); False when it is refused."""
        if turn.refused:
            return False
        if turn.delay > 0:
            await self.sleep(turn.delay)
        return True

    # ---- export endpoints ------------------------------------------------------------
    #
    # Each runs in three steps: the credential, its turn under the rate limit (an async
    # wait: a delayed request holds no thread), then the answer. The credential, the
    # project and FINISHED answers come from short-lived caches (api/cache.py) on the event
    # loop; only what they lack is read from the catalog, off the event loop.

    async def _admit(
        self, authorization: str | None, client_id: str | None, ai: str, turn: Turn | None
    ) -> Project | Reply | Turn:
        """The credential's project when it may read `ai`; a 401, or the refused Turn.
        `turn`: the credential's turn under the rate limit, when it was taken already."""
        now = self.clock()
        try:
            cred = await self._credential(authorization, client_id, now)
        except auth.Unauthorized:
            return UNAUTHORIZED
        if turn is None:
            turn = self.limiter.take(cred.rate_key)
        if turn.refused:
            return turn
        if turn.delay > 0:
            if self.metrics is not None:
                self.metrics.rate_delayed.inc()
            await self.sleep(turn.delay)
        project = await self._project(cred.project_id)
        return project if project.ai == ai else UNAUTHORIZED

    async def _credential(
        self, authorization: str | None, client_id: str | None, now: int
    ) -> auth.Credential:
        key = ("credential", authorization, client_id)
        for _ in range(2):  # from memory; else after a load of the same key, if one ran
            cred = self.credentials.cached(authorization, client_id, now)
            if cred is not None:
                if self.credentials.aging(authorization, client_id):
                    self.loads.ahead(key, self.credentials.resolve, authorization, client_id, now)
                return cred
            if not await self.loads.wait(key):
                break
        return await self.loads.run(key, self.credentials.resolve, authorization, client_id, now)

    async def _project(self, project_id: int) -> Project:
        key = ("project", project_id)
        for _ in range(2):
            project = self.projects.get(project_id)
            if project is not None:
                if self.projects.aging(project_id):
                    self.loads.ahead(key, self._read_project, project_id)
                return project
            if not await self.loads.wait(key):
                break
        return await self.loads.run(key, self._read_project, project_id)

    def _read_project(self, project_id: int) -> Project:
        generation = self.catalog.generation
        project = self.catalog.project_by_id(project_id)
        self.projects.put(project_id, project, generation)
        return project

    async def _answer(
        self,
        project: Project,
        version: str,
        types: Sequence[str],
        window: Window,
        expire: int,
        scope: str,
        now: int,
    ) -> Answer:
        """From memory when it holds the answer, else from the catalog in a thread."""
        key = ("answer", project, version, scope)
        args = (project, version, types, window, expire, scope, now)
        for _ in range(2):
            answer = self.insights.cached(project, version, scope, expire, now)
            if answer is not None:
                if self.insights.aging(project, version, scope):
                    self.loads.ahead(key, self.insights.answer, *args)
                return answer
            if not await self.loads.wait(key):
                break
        return await self.loads.run(key, self.insights.answer, *args)

    # The cores of the export endpoints and of /healthz (api/hot.Core): served by HotPaths
    # for GET, and through Starlette (api/hot.endpoint) for HEAD.

    async def v2_one(
        self, p: dict[str, Any], authorization: str | None, client_id: str | None, query: bytes
    ) -> Reply:
        return await self._v2(p, p["data_type"], authorization, client_id, query)

    async def v2_all(
        self, p: dict[str, Any], authorization: str | None, client_id: str | None, query: bytes
    ) -> Reply:
        return await self._v2(p, None, authorization, client_id, query)

    async def _v2(
        self,
        p: dict[str, Any],
        data_type: str | None,
        authorization: str | None,
        client_id: str | None,
        query: bytes,
    ) -> Reply:
        """E2 (one data type) or, when data_type is None, E3 (all of them)."""
        key: tuple[Any, ...] = ("v2", p["export_type"], data_type, p["ai"], p["export_date"])
        key += (authorization, client_id, query)
        reply, turn = self._replay(key)
        if reply is not None:
            return reply
        admitted = await self._admit(authorization, client_id, p["ai"], turn)
        if isinstance(admitted, Reply):
            return admitted
        if isinstance(admitted, Turn):
            now = self.clock()
            answer = Answer(ERROR, {}, too_many(admitted))
            body = v2_envelope(answer, p["export_type"], data_type, p["export_date"], now)
            return Reply.of(body, 429, {"retry-after": str(admitted.retry_after)})
        now = self.clock()
        export_type, label = p["export_type"], p["export_date"]
        try:
            window = export_window(export_type, label, data_type)
            label = window.label
            expire = parse_expire(expire_param(query))
        except BadParam as e:
            answer = Answer(ERROR, {}, str(e))
            return Reply.of(v2_envelope(answer, export_type, data_type, label, now), 400)
        types = DATA_TYPE_NAMES if data_type is None else (data_type,)
        scope = f"v2/{export_type}/{data_type or '*'}/{label}"
        answer = await self._answer(admitted, "v2", types, window, expire, scope, now)
        extras = wants_extras(query)
        reply = Reply.of(v2_envelope(answer, export_type, data_type, label, now, extras))
        cred = (authorization, client_id)
        self._remember(key, reply, cred, admitted, ("v2", scope), answer, expire, now)
        return reply

    async def v1(
        self, p: dict[str, Any], authorization: str | None, client_id: str | None, query: bytes
    ) -> Reply:
        key = ("v1", p["ai"], p["date"], authorization, client_id, query)
        reply, turn = self._replay(key)
        if reply is not None:
            return reply
        admitted = await self._admit(authorization, client_id, p["ai"], turn)
        if isinstance(admitted, Reply):
            return admitted
        extras = wants_extras(query)
        if isinstance(admitted, Turn):
            return self._v1_reply(ERROR, [], too_many(admitted), extras, 429, admitted)
        now = self.clock()
        try:
            try:
                window = parse_v1_date(p["date"])
            except BadDate as e:
                raise BadParam(BAD_PARAM + str(e)) from None
            expire = parse_expire(expire_param(query))
        except BadParam as e:
            return self._v1_reply(NOT_EXISTS, [], str(e), extras, 400)
        scope = f"v1/{window.label}"
        answer = await self._answer(admitted, "v1", V1_TYPE_NAMES, window, expire, scope, now)
        manifest = answer.flat_manifests() if answer.status == FINISHED else None
        reply = self._v1_reply(
            answer.status, answer.flat(), answer.error, extras, manifest=manifest
        )
        cred = (authorization, client_id)
        self._remember(key, reply, cred, admitted, ("v1", scope), answer, expire, now)
        return reply

    @staticmethod
    def _v1_reply(
        status: str,
        links: list[str],
        error: str,
        extras: bool,
        code: int = 200,
        turn: Turn | None = None,
        manifest: list[str] | None = None,
    ) -> Reply:
        """A v1 answer: GrowingIO's `status` and `downlinks`, the error text in a header;
        with `extras`, also `errorMsg` (when there is one) and `manifest` (when FINISHED)."""
        body: dict[str, Any] = {"status": status, "downlinks": links}
        if extras and error:
            body["errorMsg"] = error
        if extras and manifest is not None:
            body["manifest"] = manifest
        headers = error_header(error)
        if turn is not None:
            headers["retry-after"] = str(turn.retry_after)
        return Reply.of(body, code, headers)

    # An export request whose answer is FINISHED from the caches is answered again, while
    # all it was made of stays young there, from its encoded reply (api/cache.Replies): the
    # same bytes, after the same turn under the rate limit. Anything else takes the steps.

    def _replay(self, key: tuple[Any, ...]) -> tuple[Reply | None, Turn | None]:
        """The kept reply of key when it may be given now (its turn taken and allowed at
        once); else None and the turn taken, if one was."""
        kept = self.replies.get(key, self.clock())
        if kept is None:
            return None, None
        reply, rate_key = kept
        turn = self.limiter.take(rate_key)
        if turn.refused or turn.delay > 0:
            return None, turn
        return reply, None

    def _remember(
        self,
        key: tuple[Any, ...],
        reply: Reply,
        credential: tuple[str | None, str | None],
        project: Project,
        scope: tuple[str, str],
        answer: Answer,
        expire: int,
        now: int,
    ) -> None:
        """Keep reply, made at `now` of these cached reads, as the answer of key."""
        if answer.status != FINISHED:
            return
        generation = self.catalog.generation
        cred = self.credentials.times(*credential)
        project_times = self.projects.times(project.id)
        kept = self.insights.times(project, *scope, answer)
        if cred is None or project_times is None or kept is None:
            return
        cred_times, found, code_expiry = cred
        if found.project_id != project.id or self.projects.get(project.id) is not project:
            return
        kept_times, entry = kept
        minute = now // 60_000

        def holds(at: int) -> bool:
            return (
                at // 60_000 == minute  # the reply's requestTime
                and (code_expiry is None or at < code_expiry)
                and entry.holds(at, expire)
            )

        times = (cred_times, project_times, kept_times)
        self.replies.put(key, (reply, found.rate_key), len(reply.body), generation, times, holds)

    # ---- service ---------------------------------------------------------------------

    async def healthz(
        self, p: dict[str, Any], authorization: str | None, client_id: str | None, query: bytes
    ) -> Reply:
        return HEALTHY if await self.health.catalog_ok() else UNHEALTHY

    def openapi_json(self, request: Request) -> Response:
        return JSON(self.openapi)


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
