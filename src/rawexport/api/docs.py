"""/docs: the OpenAPI document in Swagger UI, every byte from rawexport itself.

The page is a plain list of the routes (what remains without JavaScript, or when
swagger-ui is not installed), a stylesheet and two scripts: swagger-ui-dist's bundle
(api/assets.py: the npm package `make` installs) and static/docs.js, which starts it. No
inline script or style: the page works under the console's Content-Security-Policy
(api/headers.py) with one addition, `data:` images (swagger-ui's stylesheet draws its icons
so), which every answer under /docs carries.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from rawexport.api.assets import WebAssets

STATIC = Path(__file__).parent / "static"
DOCS_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def docs_page(doc: dict[str, Any], prefix: str) -> str:
    """The page; `prefix` is the path rawexport is served under ('' or e.g. /export)."""
    items = "".join(
        f"<li><code>{html.escape(m.upper())} {html.escape(path)}</code> "
        f"{html.escape(op.get('summary', ''))}</li>"
        for path, ops in doc["paths"].items()
        for m, op in ops.items()
    )
    static = html.escape(prefix) + "/docs/static"
    spec = html.escape(prefix) + "/openapi.json"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>rawexport API</title>"
        f"<link rel='icon' href='{html.escape(prefix)}/console/static/favicon.svg' "
        "type='image/svg+xml'>"
        f"<link rel='stylesheet' href='{static}/swagger-ui.css'></head><body>"
        f"<div id='swagger-ui' data-spec='{spec}'><h1>rawexport API</h1>"
        f"<p><a href='{spec}'>openapi.json</a></p><ul>{items}</ul></div>"
        f"<script src='{static}/swagger-ui-bundle.js' defer></script>"
        f"<script src='{static}/docs.js' defer></script>"
        "</body></html>"
    )


def docs_routes(doc: dict[str, Any], base_url: str, assets: WebAssets) -> list[BaseRoute]:
    page = docs_page(doc, urlsplit(base_url).path.rstrip("/"))

    def docs(request: Request) -> Response:
        return HTMLResponse(page)

    def own(request: Request) -> Response:
        return FileResponse(STATIC / "docs.js")

    def packaged(request: Request) -> Response:
        if request.path_params["name"] not in DOCS_FILES:
            raise HTTPException(404)
        return assets.serve(request)

    return [
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/static/docs.js", own, methods=["GET"]),
        Route("/docs/static/{name}", packaged, methods=["GET"]),
    ]
