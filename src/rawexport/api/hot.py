"""The hot paths: GETs of `/healthz` and of the export endpoints, answered without
Starlette's request machinery.

They come by the thousand (a load balancer's health checks; every project polling every
type each hour), and most answers come from memory (api/cache.py). Through Starlette's
router, Request, exception wrappers and Response, plus the timing middleware, the
framework cost more than the answer itself. `HotPaths` sits in front of them: a GET whose
path matches one of the hot routes (matched with the Route's own compiled pattern and
convertors, in the router's order) is answered from the route's handler core, and timed
and logged like every other request (api/access.py). Every other request, a HEAD of the
same paths included, goes through Starlette to the same cores (`endpoint`), so the two
ways give the same answers.

An exception in a core gets the answer the app's exception handler would give it
(api/errors.answer: a UserError its 4xx, a backend outage 503 with Retry-After); any other
propagates to Starlette's outermost middleware, which answers 500 with the request id
(app._server_error), as for any other route.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rawexport.api.access import Access
from rawexport.api.errors import answer
from rawexport.metrics import Metrics

JSON_TYPE = b"application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """A JSON answer: status, encoded body, headers beyond content-length and -type."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    # The start message's headers, as Starlette's Response writes them: made once, for
    # replies given many times (the constant ones, the kept ones of api/cache.Replies).
    raw_headers: tuple[tuple[bytes, bytes], ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        raw.append((b"content-length", str(len(self.body)).encode()))
        raw.append((b"content-type", JSON_TYPE))
        object.__setattr__(self, "raw_headers", tuple(raw))

    @classmethod
    def of(cls, content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, orjson.dumps(content), tuple((headers or {}).items()))

    def response(self) -> Response:
        return Response(self.body, self.status, dict(self.headers), media_type="application/json")

    def start_message(self) -> dict[str, Any]:
        """The ASGI start message."""
        return {"type": "http.response.start", "status": self.status, "headers": self.raw_headers}


# A handler core: path parameters, the Authorization and X-Client-Id headers (first of
# each, as Starlette's Headers.get reads them) and the raw query string.
Core = Callable[[dict[str, Any], str | None, str | None, bytes], Awaitable[Reply]]


def endpoint(core: Core) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of a core (HEAD requests, and GETs when HotPaths is absent)."""

    async def handle(request: Request) -> Response:
        headers = request.headers
        reply = await core(
            request.path_params,
            headers.get("authorization"),
            headers.get("x-client-id"),
            request.scope["query_string"],
        )
        return reply.response()

    return handle


def route_path(scope: Scope) -> str:
    """The path the router matches: the request path less root_path (as Starlette's
    routing reads it when a proxy prefix is set, api/app.PublicPath)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def _auth_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    authorization = client_id = None
    for name, value in headers:
        if name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif name == b"x-client-id" and client_id is None:
            client_id = value.decode("latin-1")
    return authorization, client_id


class HotPaths:
    """ASGI middleware answering GETs of `routes` from their cores (see the module doc).

    `routes` must be the router's first GET routes, in its order, so that a path they
    match is one the router would also give them."""

    def __init__(self, app: ASGIApp, routes: Sequence[tuple[Route, Core]], metrics: Metrics):
        self.app = app
        self.access = Access(metrics)
        self.routes = [
            (route.path_regex, route.param_convertors, route.path, core) for route, core in routes
        ]

    def _find(self, path: str) -> tuple[str, Core, dict[str, Any]] | None:
        for regex, convertors, template, core in self.routes:
            match = regex.match(path)
            if match is not None:
                params = {k: convertors[k].convert(v) for k, v in match.groupdict().items()}
                return template, core, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        found = self._find(route_path(scope))
        if found is None:
            await self.app(scope, receive, send)
            return
        template, core, params = found
        start = time.perf_counter()
        status = 500
        try:
            authorization, client_id = _auth_headers(scope["headers"])
            try:
                reply = await core(params, authorization, client_id, scope["query_string"])
            except Exception as e:
                known = answer(e, "GET", scope["path"])
                if known is None:
                    raise
                reply = Reply(known.status, known.body, tuple(known.headers.items()))
            status = reply.status
            await send(reply.start_message())
            await send({"type": "http.response.body", "body": reply.body})
        finally:
            seconds = time.perf_counter() - start
            self.access.record(template, "GET", scope["path"], status, seconds)
