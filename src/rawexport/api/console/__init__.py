"""The console: server-rendered pages under /console for operators and project analysts.

`console_routes` gives the routes `api.app` mounts: the pages (routes.py), the vendored
htmx and the stylesheet (static/), every answer with a strict Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rawexport.api.console.routes import HERE, Console
from rawexport.api.downloads import FilePaths
from rawexport.blobs import BlobStore
from rawexport.catalog import Catalog
from rawexport.settings import Settings

# Everything from rawexport itself: no inline script or style, no eval, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeaders:
    """CSP and friends on every console answer; pages are never cached (secrets, CSRF)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        static = scope.get("path", "").rstrip("/").rsplit("/", 2)[-2:-1] == ["static"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = CSP
                headers["x-content-type-options"] = "nosniff"
                headers["x-frame-options"] = "DENY"
                headers["referrer-policy"] = "no-referrer"
                headers["cache-control"] = "public, max-age=3600" if static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def console_routes(
    settings: Settings,
    catalog: Catalog,
    blobs: BlobStore | FilePaths,
    clock: Callable[[], int],
) -> list[BaseRoute]:
    """`/` and `/console` redirect to the console; `/console/...` are its pages."""
    c = Console(settings, catalog, blobs, clock)
    pages = Router(
        routes=[
            Route("/", c.index, methods=["GET"]),
            Route("/signin", c.signin_page, methods=["GET"]),
            Route("/signin", c.signin, methods=["POST"]),
            Route("/signout", c.signout, methods=["POST"]),
            Route("/p/{ai}", c.project_page, methods=["GET"]),
            Route("/p/{ai}/grid", c.grid_fragment, methods=["GET"]),
            Route("/p/{ai}/hour/{hour}/{kind}", c.hour_page, methods=["GET"]),
            Route("/p/{ai}/file/{hour}/{kind}", c.file, methods=["GET"]),
            Route("/p/{ai}/{action}", c.action, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
    )

    def to_console(request: Request) -> Response:
        return RedirectResponse(c.root + "/", 303)

    return [
        Route("/", to_console, methods=["GET", "HEAD"]),
        Route("/console", to_console, methods=["GET", "HEAD"]),
        Mount("/console", app=SecurityHeaders(pages)),
    ]
