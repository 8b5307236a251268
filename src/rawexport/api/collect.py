"""The collectors' HTTP routes: every route GrowingIO's SDKs send to, answered as each expects.

spec/GROWINGIO_COLLECT_SPEC.md §1: the CDP route `/v3/projects/{ai}/collect` (POST, the
web SDK's image GET with `data=`, OPTIONS) answers 204 with no body (the web SDK's XHR
takes nothing else); its items and user-mapping routes 204; the SaaS routes (mobile,
ads, server, custom, v2, mini-program, web) answer exactly 200 with a JSON report the
SDKs ignore. Every answer carries CORS headers. A parseable batch is never refused: bad
events are dropped one by one, counted in `/metrics` and logged. The native event API
(`/api/v1/projects/{ai}/events`) answers 200 with the report.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import orjson
from starlette.background import BackgroundTask
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rawexport.api.auth import bearer
from rawexport.api.cache import Fresh
from rawexport.api.errors import error_response
from rawexport.api.peers import Peers
from rawexport.catalog import Catalog, Project
from rawexport.errors import RETRY_AFTER
from rawexport.ingest import joins, sdk, useragent
from rawexport.ingest.codecs import Refused, TooBig, gunzip, image_data
from rawexport.ingest.collectors import Decoders
from rawexport.ingest.group_commit import Ingestor
from rawexport.metrics import Metrics
from rawexport.settings import Settings
from rawexport.timeutil import now_ms

log = logging.getLogger("rawexport.collect")

# A body is decoded and parsed on the event loop while it stays within OFFLOAD_BYTES, sent
# and decoded; a larger one off the event loop, HEAVY_AT_ONCE at a time (each may take
# several times its decoded size in memory while parsed), the others waiting their turn
# without a thread.
OFFLOAD_BYTES = 1 << 20
HEAVY_AT_ONCE = 2
ALLOW_HEADERS = (
    "Accept, Content-Type, Content-Encoding, X-Timestamp, X-Crypt-Codec, X-Compress-Codec, "
    "X-Client-Id"
)


class _Hex(Convertor[str]):
    """A project id in a path with no literal segment before it (16 or 32 hex digits)."""

    regex = "[0-9a-fA-F]{16}(?:[0-9a-fA-F]{16})?"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _Platform(Convertor[str]):
    """The platform segment of the SaaS routes (`andorid` is the SDKs' own spelling)."""

    regex = "android|andorid|ios|web"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _V3Platform(_Platform):
    regex = "android|andorid|ios|web|s2s"


register_url_convertor("aihex", _Hex())
register_url_convertor("saasplatform", _Platform())
register_url_convertor("v3platform", _V3Platform())


def _json(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def cors(request: Request) -> dict[str, str]:
    """CORS headers of a collect answer: the page's origin echoed (no credentials are sent)."""
    origin = request.headers.get("origin")
    if not origin:
        return {"access-control-allow-origin": "*"}
    return {"access-control-allow-origin": origin, "vary": "Origin"}


class Gate:
    """Who may send to a project: looks projects and keys up through the export API's cache
    (api/cache.Fresh): a revocation or a disabled export made through this node's catalog
    is seen by the next request, one made elsewhere within `cache_seconds`."""

    def __init__(
        self,
        catalog: Catalog,
        require_key: bool,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.require_key = require_key
        # Misses are kept too (a 1-tuple holds the value, None included).
        self._projects: Fresh[tuple[Project | None]] = Fresh(
            lambda: catalog.generation, cache_seconds, clock=clock
        )
        self._keys: Fresh[tuple[int | None]] = Fresh(
            lambda: catalog.generation, cache_seconds, clock=clock
        )

    def project(self, ai: str) -> Project | None:
        hit = self._projects.get(ai)
        if hit is not None:
            return hit[0]
        generation = self.catalog.generation  # before the read: a write meanwhile wins
        project = self.catalog.project(ai)
        self._projects.put(ai, (project,), generation)
        return project

    def key_project(self, secret: str) -> int | None:
        """The project of a key pair's public key or of an API token; None if neither."""
        hit = self._keys.get(secret)
        if hit is not None:
            return hit[0]
        generation = self.catalog.generation
        kp = self.catalog.key_pair(secret)
        owner = kp.project_id if kp is not None else self.catalog.project_for_token(secret)
        self._keys.put(secret, (owner,), generation)
        return owner

    def check(
        self, ai: str, client_id: str | None, authorization: str | None, lenient: bool = False
    ) -> Project:
        """The project events may be written to; raises Refused with 404 or 403.

        `lenient` (the SDK routes, unless collect_require_key): a key rawexport does not
        know is ignored, as if none were sent (the py2 SDK sends the X-Client-Id it was
        configured with, perhaps GrowingIO's); a key of another project is still refused.
        """
        project = self.project(ai)
        if project is None:
            raise Refused(404, f"no project {ai}")
        if not project.export_enabled:
            raise Refused(403, "export is disabled for this project")
        secrets = [s for s in (client_id, bearer(authorization)) if s]
        if not secrets:
            if self.require_key:
                raise Refused(403, "X-Client-Id required")
            return project
        for secret in secrets:
            owner = self.key_project(secret)
            if owner is None and lenient and not self.require_key:
                continue
            if owner != project.id:
                raise Refused(403, "wrong key for this project")
        return project


_LIBC: Any = None
if sys.platform.startswith("linux"):
    try:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        _LIBC = None


def give_back_memory() -> None:
    """Return free heap pages to the OS (glibc's malloc_trim), after a body refused for its
    size: the buffers its decoding filled are free, but in arenas that the small, lasting
    allocations of the node's other threads can keep from shrinking, so the process would
    keep tens of MB per such request. Elsewhere a no-op."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body as sent (Content-Encoding is undone by the decoders); 413 past
    `limit`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, f"body larger than {limit} bytes")
    return bytes(body)


@dataclass(frozen=True)
class Family:
    """How one group of routes decodes its bodies and answers."""

    convert: str  # "cdp", "saas", "item", "user-mapping", "native"
    status: int  # the success status the SDKs of these routes expect
    report: bool  # answer the JSON report (SaaS, native) rather than no body


CDP = Family("cdp", 204, False)
ITEMS = Family("item", 204, False)
USER_MAPPINGS = Family("user-mapping", 204, False)
SAAS = Family("saas", 200, True)
NATIVE = Family("native", 200, True)
DEVICES = Family("devices", 200, True)  # the SaaS Android SDK's old activation GET

PLATFORMS = {"android": "android", "andorid": "android", "ios": "ios", "web": "web"}


class Collectors:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        ingestor: Ingestor,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.metrics = metrics
        self.gate = Gate(catalog, settings.collect_require_key, settings.cache_seconds)
        self.sessions = joins.Sessions(
            store=catalog, on_error=None if metrics is None else metrics.failed("sdk-links")
        )
        self.mapper = sdk.Mapper(self.sessions, settings.login_user_attributes)
        self.decoders = Decoders(
            settings.max_body_bytes,
            settings.max_batch_events,
            self.mapper,
            settings.max_batch_values,
        )
        # the first try of a body sent within OFFLOAD_BYTES, on the event loop: decoding
        # stops past OFFLOAD_BYTES (TooBig), and the body is decoded again off the loop
        self.quick = self.decoders
        if settings.max_body_bytes > OFFLOAD_BYTES:
            self.quick = Decoders(
                OFFLOAD_BYTES, settings.max_batch_events, self.mapper, settings.max_batch_values
            )
        self.heavy = anyio.CapacityLimiter(HEAVY_AT_ONCE)
        self.peers = Peers(settings.trusted_proxies)
        self.rejected_total = 0
        useragent.warm()

    def _convert(
        self,
        family: Family,
        request: Request,
        body: bytes,
        query: Mapping[str, str],
        origin: sdk.Origin,
        decoders: Decoders,
    ) -> sdk.Filed:
        headers = request.headers
        if request.method == "POST":
            body = gunzip(body, headers.get("content-encoding", ""), decoders.max_body_bytes)
        if family.convert in ("cdp", "saas"):
            return decoders.events(family.convert, headers, query, body, origin)
        if family.convert == "devices":
            event = {k: v for k, v in query.items() if k != "t"} | {"t": "activate"}
            return self.mapper.saas([event], origin)
        if family.convert == "native":
            batch = decoders.native(body, origin.received)
            return sdk.Filed(batch, events=batch.accepted + len(batch.rejected))
        return decoders.items(headers, query, body, family.convert)

    def _convert_apart(
        self,
        family: Family,
        request: Request,
        body: bytes,
        query: Mapping[str, str],
        origin: sdk.Origin,
    ) -> sdk.Filed | Refused:
        """_convert with the full limits, in a worker thread; a refusal is returned, not
        raised: an exception that crosses the thread's future holds it, and the future
        the frames of its traceback, the decoded body among them, in a reference cycle
        that only the garbage collector frees (tens of MB per request, kept for seconds)."""
        try:
            return self._convert(family, request, body, query, origin, self.decoders)
        except Refused as e:
            return Refused(e.status, e.message, e.errors)

    def _refused(self, request: Request, e: Refused, allow: dict[str, str]) -> Response:
        if request.method == "GET" and e.status == 400:
            # an image the browser cut short (`#` in a value): lost, and nobody reads the
            # answer; say so in the log and the counts
            self._count(0, 1, 0, 0)
            log.warning(
                "%s: an image GET whose data could not be read: %s",
                request.path_params.get("ai"),
                e.message,
            )
            return Response(None, 204, allow)
        answer = error_response(e.status, e.public(), allow, e.errors)
        if e.status == 413:  # once answered, give the refused body's pages back
            answer.background = BackgroundTask(give_back_memory)
        return answer

    def handler(self, family: Family) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            allow = cors(request)
            if request.method == "OPTIONS":
                return Response(
                    None,
                    200 if family.status == 200 else 204,
                    allow
                    | {
                        "access-control-allow-methods": "POST, GET, OPTIONS",
                        "access-control-allow-headers": ALLOW_HEADERS,
                        "access-control-max-age": "86400",
                    },
                )
            now = now_ms()
            params = request.path_params
            try:
                headers = request.headers
                project = self.gate.check(
                    params["ai"],
                    headers.get("x-client-id"),
                    headers.get("authorization"),
                    lenient=family.convert != "native",
                )
                query: Mapping[str, str] = request.query_params
                if family.convert == "devices":
                    body = b""
                elif request.method == "GET":  # an image GET: the body is the query's data=
                    body = image_data(request.scope.get("query_string", b""))
                    if query.get("compress") != "11":  # 0: the JSON itself
                        query = {k: v for k, v in query.items() if k != "compress"}
                else:
                    body = await read_body(request, self.settings.max_body_bytes)
                origin = sdk.Origin(
                    ai=project.ai,
                    received=now,
                    ip=self.peers.address(request),
                    user_agent=headers.get("user-agent", ""),
                    route_platform=PLATFORMS.get(params.get("platform", "")),
                )
                filed: sdk.Filed | None = None
                if len(body) <= OFFLOAD_BYTES:
                    try:
                        filed = self._convert(family, request, body, query, origin, self.quick)
                    except TooBig:
                        if self.quick is self.decoders:
                            raise
                if filed is None:  # sent or decoded past OFFLOAD_BYTES
                    done = await anyio.to_thread.run_sync(
                        self._convert_apart,
                        family,
                        request,
                        body,
                        query,
                        origin,
                        limiter=self.heavy,
                    )
                    if isinstance(done, Refused):
                        return self._refused(request, done, allow)
                    filed = done
            except Refused as e:
                return self._refused(request, e, allow)
            batch = filed.batch
            if batch.tables:
                try:
                    await self.ingestor.write(project.id, project.ai, batch.tables)
                except Exception:
                    self.sessions.resent.forget(filed.prints)
                    log.exception("could not store a batch of %s", project.ai)
                    retry = {"retry-after": str(RETRY_AFTER)}
                    return error_response(503, "could not store the events", allow | retry)
            accepted = filed.events - len(batch.rejected)
            self._count(accepted, len(batch.rejected), filed.unexported, filed.duplicates)
            if batch.rejected:
                self.rejected_total += len(batch.rejected)
                log.warning(
                    "%s: rejected %d of %d events (%d since start): %s",
                    project.ai,
                    len(batch.rejected),
                    len(batch.rejected) + accepted,
                    self.rejected_total,
                    "; ".join(f"{r.index} {r.field}: {r.reason}" for r in batch.rejected[:5]),
                )
            report: dict[str, Any] = {
                "accepted": accepted,
                "rejected": [r.public() for r in batch.rejected],
            }
            if filed.unexported and family.convert in ("cdp", "saas"):
                report["notExported"] = filed.unexported
            if filed.duplicates:
                report["duplicates"] = filed.duplicates
            counts = {
                "x-rawexport-accepted": str(accepted),
                "x-rawexport-rejected": str(len(batch.rejected)),
            }
            if family.report or "return=representation" in request.headers.get("prefer", ""):
                return _json(report, 200 if family.status == 204 else family.status, allow | counts)
            return Response(None, family.status, allow | counts)

        return handle

    def _count(self, accepted: int, rejected: int, unexported: int, duplicates: int) -> None:
        if self.metrics is None:
            return
        self.metrics.ingest.labels("accepted").inc(accepted)
        self.metrics.ingest.labels("rejected").inc(rejected)
        self.metrics.ingest.labels("not_exported").inc(unexported)
        self.metrics.ingest.labels("duplicate").inc(duplicates)


def collector_routes(
    settings: Settings, catalog: Catalog, ingestor: Ingestor, metrics: Metrics | None = None
) -> list[Route]:
    """The collector routes (spec §1.1); `ingestor` must be started before the app serves."""
    c = Collectors(settings, catalog, ingestor, metrics)
    post = ["POST", "OPTIONS"]
    both = ["POST", "GET", "OPTIONS"]
    saas = c.handler(SAAS)
    return [
        # CDP: every SDK (web, mobile, mini-programs, Java, Go, PHP, Python)
        Route("/v3/projects/{ai}/collect", c.handler(CDP), methods=both),
        Route("/projects/{ai}/collect/item", c.handler(ITEMS), methods=post),
        Route("/projects/{ai}/collect/user-mapping", c.handler(USER_MAPPINGS), methods=post),
        # SaaS: mobile 2.x, ads, server (s2s), old custom and v2 routes, mini-programs, web
        Route("/v3/{ai}/{platform:v3platform}/{kind:str}", saas, methods=both),
        Route("/v3/{ai}/s2s/cstm/", saas, methods=post),
        Route("/app/{ai}/{platform:saasplatform}/ctvt", saas, methods=post),
        Route("/{ai:aihex}/{platform:saasplatform}/devices", c.handler(DEVICES), methods=["GET"]),
        Route("/custom/{ai}/events", saas, methods=both),
        Route("/custom/{ai}/{platform:saasplatform}/events", saas, methods=both),
        Route("/v2/{ai}/{platform:saasplatform}/{kind:str}", saas, methods=both),
        Route("/projects/{ai}/apps/{app_id:str}/collect", saas, methods=post),
        # the native event API
        Route("/api/v1/projects/{ai}/events", c.handler(NATIVE), methods=["POST"]),
    ]
