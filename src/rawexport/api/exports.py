"""The export endpoints' request flows: /auth/token, the v2 (E2, E3) and v1 endpoints and
/healthz. Each export request is admitted once (credential, project, its turn under the
rate limit), then answered from short-lived caches or the catalog; a FINISHED reply may
be given again from memory (api/cache.Replies)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rawexport.api import auth, openapi
from rawexport.api.cache import Fresh, Loads, Replies
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
from rawexport.api.errors import error_response
from rawexport.api.health import HEALTHY, UNHEALTHY, Health
from rawexport.api.hot import Reply
from rawexport.api.insights import ERROR, FINISHED, NOT_EXISTS, Answer, Insights
from rawexport.api.peers import Peers
from rawexport.api.ratelimit import RateLimiter, Turn, node_auth_limiter
from rawexport.blobs.links import SECRET_NAME
from rawexport.catalog import Catalog, Project
from rawexport.metrics import Metrics
from rawexport.schema import DATA_TYPE_NAMES, V1_TYPE_NAMES
from rawexport.settings import Settings
from rawexport.timeutil import (
    BadDate,
    Window,
    parse_v1_date,
)

log = logging.getLogger("rawexport.api")

T = TypeVar("T")


class _NotAdmitted(Exception):
    """An export request answered before its answer is read (a 401)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class _OverLimit(Exception):
    """An export request over the rate limit: its refused turn."""

    def __init__(self, turn: Turn) -> None:
        super().__init__(turn.retry_after)
        self.turn = turn


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
    ) -> Project:
        """The credential's project when it may read `ai`; raises _NotAdmitted (401) or
        _OverLimit (the refused turn). `turn`: the credential's turn, when it was taken already."""
        now = self.clock()
        try:
            cred = await self._credential(authorization, client_id, now)
        except auth.Unauthorized:
            raise _NotAdmitted(UNAUTHORIZED) from None
        if turn is None:
            turn = self.limiter.take(cred.rate_key)
        if turn.refused:
            raise _OverLimit(turn)
        if turn.delay > 0:
            if self.metrics is not None:
                self.metrics.rate_delayed.inc()
            await self.sleep(turn.delay)
        project = await self._project(cred.project_id)
        if project.ai != ai:
            raise _NotAdmitted(UNAUTHORIZED)
        return project

    async def _flow(
        self,
        key: tuple[Any, ...],
        ai: str,
        authorization: str | None,
        client_id: str | None,
        limited: Callable[[Turn], Reply],
        answer: Callable[[Project], Awaitable[Reply]],
    ) -> Reply:
        """One export request: its kept reply when it may be given again; else admitted
        (a refusal, or `limited` of a refused turn, is the answer), then `answer`."""
        reply, turn = self._replay(key)
        if reply is not None:
            return reply
        try:
            project = await self._admit(authorization, client_id, ai, turn)
        except _NotAdmitted as e:
            return e.reply
        except _OverLimit as e:
            return limited(e.turn)
        return await answer(project)

    async def _read(
        self,
        key: tuple[Any, ...],
        cached: Callable[[], T | None],
        aging: Callable[[], bool],
        load: Callable[..., T],
        *args: Any,
    ) -> T:
        """A cached read: from memory when it holds the value (loaded again ahead of time
        when aging), else after a load of the same key if one ran, else loaded off the
        event loop (api/cache.Loads: one load per key at a time)."""
        for _ in range(2):
            value = cached()
            if value is not None:
                if aging():
                    self.loads.ahead(key, load, *args)
                return value
            if not await self.loads.wait(key):
                break
        return cast(T, await self.loads.run(key, load, *args))

    async def _credential(
        self, authorization: str | None, client_id: str | None, now: int
    ) -> auth.Credential:
        creds = self.credentials
        return await self._read(
            ("credential", authorization, client_id),
            lambda: creds.cached(authorization, client_id, now),
            lambda: creds.aging(authorization, client_id),
            creds.resolve,
            authorization,
            client_id,
            now,
        )

    async def _project(self, project_id: int) -> Project:
        return await self._read(
            ("project", project_id),
            lambda: self.projects.get(project_id),
            lambda: self.projects.aging(project_id),
            self._read_project,
            project_id,
        )

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
        insights = self.insights
        return await self._read(
            ("answer", project, version, scope),
            lambda: insights.cached(project, version, scope, expire, now),
            lambda: insights.aging(project, version, scope),
            insights.answer,
            *(project, version, types, window, expire, scope, now),
        )

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
        export_type, label = p["export_type"], p["export_date"]

        def limited(turn: Turn) -> Reply:
            answer = Answer(ERROR, {}, too_many(turn))
            body = v2_envelope(answer, export_type, data_type, label, self.clock())
            return Reply.of(body, 429, {"retry-after": str(turn.retry_after)})

        async def answer(project: Project) -> Reply:
            now = self.clock()
            shown = label  # the date as asked, or as parsed once it parsed
            try:
                window = export_window(export_type, label, data_type)
                shown = window.label
                expire = parse_expire(expire_param(query))
            except BadParam as e:
                failed = Answer(ERROR, {}, str(e))
                return Reply.of(v2_envelope(failed, export_type, data_type, shown, now), 400)
            types = DATA_TYPE_NAMES if data_type is None else (data_type,)
            scope = f"v2/{export_type}/{data_type or '*'}/{window.label}"
            found = await self._answer(project, "v2", types, window, expire, scope, now)
            extras = wants_extras(query)
            body = v2_envelope(found, export_type, data_type, window.label, now, extras)
            reply = Reply.of(body)
            cred = (authorization, client_id)
            self._remember(key, reply, cred, project, ("v2", scope), found, expire, now)
            return reply

        return await self._flow(key, p["ai"], authorization, client_id, limited, answer)

    async def v1(
        self, p: dict[str, Any], authorization: str | None, client_id: str | None, query: bytes
    ) -> Reply:
        key = ("v1", p["ai"], p["date"], authorization, client_id, query)
        extras = wants_extras(query)

        def limited(turn: Turn) -> Reply:
            return self._v1_reply(ERROR, [], too_many(turn), extras, 429, turn)

        async def answer(project: Project) -> Reply:
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
            found = await self._answer(project, "v1", V1_TYPE_NAMES, window, expire, scope, now)
            manifest = found.flat_manifests() if found.status == FINISHED else None
            reply = self._v1_reply(
                found.status, found.flat(), found.error, extras, manifest=manifest
            )
            cred = (authorization, client_id)
            self._remember(key, reply, cred, project, ("v1", scope), found, expire, now)
            return reply

        return await self._flow(key, p["ai"], authorization, client_id, limited, answer)

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
