"""Request timing and the access log: one JSON line and one histogram sample per request."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rawexport.logs import info_line
from rawexport.metrics import Metrics

access = logging.getLogger("rawexport.access")


class Access:
    """Writes what a request did: its latency sample (by route template, method and status)
    and its access log line. Used by RequestMetrics and by the hot paths (api/hot.py)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # prometheus_client's labels() takes a lock and checks its arguments on every call;
        # the few (route, method, status) children a process sees are kept here instead.
        self._children: dict[tuple[str, str, int], Any] = {}

    def record(self, template: str, method: str, path: str, status: int, seconds: float) -> None:
        key = (template, method, status)
        child = self._children.get(key)
        if child is None:
            child = self.metrics.requests.labels(template, method, str(status))
            if len(self._children) < 10_000:  # methods are the client's to choose
                self._children[key] = child
        child.observe(seconds)
        if status == 429:
            self.metrics.rate_limited.inc()
        fields: dict[str, object] = {
            "event": "request",
            "method": method,
            "route": template,
            "path": path,
            "status": status,
            "ms": round(seconds * 1000, 3),
        }
        info_line(access, f"{method} {path} {status}", fields)


class RequestMetrics:
    """ASGI middleware timing every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.access = Access(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            seconds = time.perf_counter() - start
            self.access.record(template, scope["method"], scope.get("path", ""), status[0], seconds)
