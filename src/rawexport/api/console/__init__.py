"""The console: server-rendered pages under /console for operators and project analysts.

`console_routes` gives the routes `api.app` mounts: the pages (routes.py), our stylesheet
and scripts (static/) and htmx from its npm package (api/assets.py); the app gives every
answer under /console a strict Content-Security-Policy (api/headers.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from rawexport.api.assets import WebAssets
from rawexport.api.console.routes import HERE, Console
from rawexport.api.headers import CSP
from rawexport.api.ratelimit import RateLimiter
from rawexport.blobs import BlobStore
from rawexport.catalog import Catalog
from rawexport.settings import Settings

__all__ = ["CSP", "PAGES", "console_routes"]
VENDOR = ("htmx.min.js",)  # of api/assets.FILES, what the console's pages load

# The console's routes under /console: (path, Console method, HTTP methods). Every POST is
# a change and checks the CSRF token (tests/console/test_csrf.py posts to each).
PAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/", "index", ("GET",)),
    ("/signin", "signin_page", ("GET",)),
    ("/signin", "signin", ("POST",)),
    ("/signout", "signout", ("POST",)),
    ("/p/{ai}", "project_page", ("GET",)),
    ("/p/{ai}/grid", "grid_fragment", ("GET",)),
    ("/p/{ai}/destinations", "destinations_page", ("GET",)),
    ("/p/{ai}/hour/{hour}/{kind}", "hour_page", ("GET",)),
    ("/p/{ai}/file/{hour}/{kind}", "file", ("GET",)),
    ("/p/{ai}/{action}", "action", ("POST",)),  # action: one of actions.ACTIONS
)


def console_routes(
    settings: Settings,
    catalog: Catalog,
    blobs: BlobStore,
    clock: Callable[[], int],
    limiter: RateLimiter,
    sleep: Callable[[float], Awaitable[None]],
    assets: WebAssets,
) -> list[BaseRoute]:
    """`/` and `/console` redirect to the console; `/console/...` are its pages.
    `limiter`: the API's per-credential limiter, which the console's writes share."""
    c = Console(settings, catalog, blobs, clock, limiter, sleep)

    def vendor(request: Request) -> Response:
        if request.path_params["name"] not in VENDOR:
            raise HTTPException(404)
        return assets.serve(request)

    pages = Router(
        routes=[
            *(Route(path, getattr(c, name), methods=list(m)) for path, name, m in PAGES),
            Route("/static/vendor/{name}", vendor, methods=["GET"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
    )

    def to_console(request: Request) -> Response:
        return RedirectResponse(c.root + "/", 303)

    return [
        Route("/", to_console, methods=["GET", "HEAD"]),
        Route("/console", to_console, methods=["GET", "HEAD"]),
        Mount("/console", app=pages),
    ]
