"""Security headers of what rawexport serves to browsers: every answer under /console and
/docs (pages, files, redirects, and the 404, 405 and 500 answers too) carries a strict
Content-Security-Policy and its companions.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Everything from rawexport itself: no inline script or style, no eval, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# /docs: the same, and `data:` images (swagger-ui's stylesheet draws its icons as data: SVG).
DOCS_CSP = CSP.replace("img-src 'self';", "img-src 'self' data:;")
PREFIXES = ("/console", "/docs")


def route_path(path: str, root: str) -> str:
    """A request's path below `root` (the path of `public_url`, such as /export)."""
    return path[len(root) :] if root and path.startswith(root + "/") else path


def covered(path: str, root: str = "") -> bool:
    path = route_path(path, root)
    return any(path == p or path.startswith(p + "/") for p in PREFIXES)


def security_headers(path: str, root: str = "") -> dict[str, str]:
    """The headers of an answer to a request of path; files under a static/ folder may be
    cached, pages never (they hold CSRF tokens and one-time secrets)."""
    path = route_path(path, root)
    static = "/static/" in path
    return {
        "content-security-policy": DOCS_CSP if path.startswith("/docs") else CSP,
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
        "cache-control": "public, max-age=3600" if static else "no-store",
    }


class SecurityHeaders:
    """Adds security_headers() to every answer under PREFIXES. It sits outside the router's
    error handling, so the router's own 404 and 405 get them as well; the app's 500 handler
    adds them itself (Starlette sends it from outside every middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Read before routing: the router rewrites the scope's root_path as it descends.
        path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
        if scope["type"] != "http" or not covered(path, root):
            await self.app(scope, receive, send)
            return
        extra = security_headers(path, root)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
