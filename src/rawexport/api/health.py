"""`/healthz` (whether the catalog answers, probed at most once a second) and the
middleware that serves the API under the path of `public_url`."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from rawexport.api.hot import Reply
from rawexport.catalog import Catalog

log = logging.getLogger("rawexport.api")

HEALTH_SECONDS = 1.0  # the longest /healthz reports a catalog state it has not probed

HEALTHY = Reply.of({"status": "ok"})
UNHEALTHY = Reply.of({"status": "error", "catalog": "unavailable"}, 503)


class Health:
    """Whether the catalog answers, probed at most once per HEALTH_SECONDS: a load
    balancer polling /healthz hard costs the catalog one `SELECT 1` a second, not one a
    request. While a probe runs, other requests get the last result (the first waits)."""

    def __init__(self, catalog: Catalog, clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog = catalog
        self.clock = clock
        self._ok: bool | None = None
        self._at = -math.inf
        self._probing = False

    def _probe(self) -> bool:
        try:
            self.catalog.ping()
        except Exception:
            log.exception("health check: the catalog does not answer")
            return False
        return True

    async def catalog_ok(self) -> bool:
        due = self.clock() - self._at >= HEALTH_SECONDS
        if (due and not self._probing) or self._ok is None:
            self._probing = True
            try:
                self._ok = await run_in_threadpool(self._probe)
                self._at = self.clock()
            finally:
                self._probing = False
        return self._ok


class PublicPath:
    """Routes requests under the path of `public_url` (a proxy serving rawexport at /export/):
    `/export/v2/insights/...` and `/export/{key}` reach the same routes as without it."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == self.prefix or path.startswith(self.prefix + "/")):
            scope = {**scope, "root_path": scope.get("root_path", "") + self.prefix}
        await self.app(scope, receive, send)
