"""Request timing and the access log: one JSON line and one histogram sample per request."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rawexport.logs import info_line
from rawexport.metrics import Metrics

access = logging.getLogger("rawexport.access")


class RequestMetrics:
    """ASGI middleware timing every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

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
            if status[0] == 429:
                self.metrics.rate_limited.inc()
            self.metrics.requests.labels(template, scope["method"], str(status[0])).observe(seconds)
            method, path = scope["method"], scope.get("path", "")
            fields: dict[str, object] = {
                "event": "request",
                "method": method,
                "route": template,
                "path": path,
                "status": status[0],
                "ms": round(seconds * 1000, 3),
            }
            info_line(access, f"{method} {path} {status[0]}", fields)
