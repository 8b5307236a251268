"""The collectors' HTTP routes: who may send, the body read within its limit, the batch stored."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rawexport.api.auth import bearer
from rawexport.catalog import Catalog, Project
from rawexport.ingest import validate as ingest
from rawexport.ingest.collectors import Decoders, Refused, gunzip
from rawexport.ingest.group_commit import Ingestor
from rawexport.metrics import Metrics
from rawexport.settings import Settings
from rawexport.timeutil import now_ms

log = logging.getLogger("rawexport.collect")

CACHE_SECONDS = 5.0
OFFLOAD_BYTES = 1 << 20  # bodies above this are parsed and checked off the event loop


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status, media_type="application/json")


class Gate:
    """Who may send to a project: looks projects and keys up, caching them for a few seconds."""

    def __init__(self, catalog: Catalog, require_key: bool) -> None:
        self.catalog = catalog
        self.require_key = require_key
        self._projects: dict[str, tuple[float, Project | None]] = {}
        self._keys: dict[str, tuple[float, int | None]] = {}

    def _cached(
        self, cache: dict[str, tuple[float, Any]], key: str, load: Callable[[], Any]
    ) -> Any:
        now = time.monotonic()
        hit = cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        if len(cache) > 10_000:
            cache.clear()
        cache[key] = (now + CACHE_SECONDS, value)
        return value

    def project(self, ai: str) -> Project | None:
        return self._cached(self._projects, ai, lambda: self.catalog.project(ai))  # type: ignore[no-any-return]

    def key_project(self, secret: str) -> int | None:
        def load() -> int | None:
            kp = self.catalog.key_pair(secret)
            return kp.project_id if kp is not None else self.catalog.project_for_token(secret)

        return self._cached(self._keys, secret, load)  # type: ignore[no-any-return]

    def check(self, ai: str, client_id: str | None, authorization: str | None) -> Project:
        """The project events may be written to; raises Refused with 404 or 403."""
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
            if owner != project.id:
                raise Refused(403, "wrong key for this project")
        return project


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, gunzipped when Content-Encoding says gzip; 413 past `limit`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refused(413, f"body larger than {limit} bytes")
    return gunzip(bytes(body), request.headers.get("content-encoding", ""), limit)


Convert = Callable[[Request, bytes, Project, int], ingest.Batch]


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
        self.gate = Gate(catalog, settings.collect_require_key)
        self.decoders = Decoders(settings.max_body_bytes, settings.max_batch_events)
        self.rejected_total = 0

    def tracker(self, request: Request, body: bytes, project: Project, now: int) -> ingest.Batch:
        return self.decoders.tracker(request.headers, request.query_params, body, now)

    def saas(self, request: Request, body: bytes, project: Project, now: int) -> ingest.Batch:
        return self.decoders.saas(request.headers, body, project.ai, now)

    def native(self, request: Request, body: bytes, project: Project, now: int) -> ingest.Batch:
        return self.decoders.native(body, now)

    def handler(self, convert: Convert) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            now = now_ms()
            try:
                headers = request.headers
                project = self.gate.check(
                    request.path_params["ai"],
                    headers.get("x-client-id"),
                    headers.get("authorization"),
                )
                body = await read_body(request, self.settings.max_body_bytes)
                if len(body) > OFFLOAD_BYTES:  # keep the event loop free for other requests
                    batch = await run_in_threadpool(convert, request, body, project, now)
                else:
                    batch = convert(request, body, project, now)
            except Refused as e:
                return _json({"message": e.message, "errors": e.errors}, e.status)
            if batch.tables:
                try:
                    await self.ingestor.write(project.id, project.ai, batch.tables)
                except Exception:
                    log.exception("could not store a batch of %s", project.ai)
                    return _json({"message": "could not store the events", "errors": []}, 503)
            if self.metrics is not None:
                self.metrics.ingest.labels("accepted").inc(batch.accepted)
                self.metrics.ingest.labels("rejected").inc(len(batch.rejected))
            if batch.rejected:
                self.rejected_total += len(batch.rejected)
                log.warning(
                    "%s: rejected %d of %d events (%d since start)",
                    project.ai,
                    len(batch.rejected),
                    len(batch.rejected) + batch.accepted,
                    self.rejected_total,
                )
            rejected = [r.public() for r in batch.rejected]
            return _json({"accepted": batch.accepted, "rejected": rejected})

        return handle


def collector_routes(
    settings: Settings, catalog: Catalog, ingestor: Ingestor, metrics: Metrics | None = None
) -> list[Route]:
    """The collector routes; `ingestor` must be started before the app serves."""
    c = Collectors(settings, catalog, ingestor, metrics)
    return [
        Route("/v3/projects/{ai}/collect", c.handler(c.tracker), methods=["POST"]),
        Route("/custom/{ai}/events", c.handler(c.saas), methods=["POST"]),
        Route("/api/v1/projects/{ai}/events", c.handler(c.native), methods=["POST"]),
    ]
