"""Browser code rawexport serves but does not carry: htmx (the console's live refresh) and
swagger-ui (the /docs page), from their npm packages.

`make` installs them (js/package.json; js/package-lock.json pins each version and its
sha512) into `.venv/js/node_modules`: PREFIX/js/node_modules of the Python environment,
where they are looked for unless the `web_assets` setting names another directory. Only
the files listed here are served, and only from a package of the pinned version. When one
is missing, `serve` logs what to run once at start and `rawexport check` fails on it; its
URLs answer 404, the console still works without JavaScript (no live refresh) and /docs
still lists the routes.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

log = logging.getLogger("rawexport.api")

# The versions js/package-lock.json pins (tests/api/test_docs_page.py holds them equal).
PINNED = {"htmx.org": "2.0.11", "swagger-ui-dist": "5.36.0"}

# URL name -> (package, file in the package)
FILES = {
    "htmx.min.js": ("htmx.org", "dist/htmx.min.js"),
    "swagger-ui-bundle.js": ("swagger-ui-dist", "swagger-ui-bundle.js"),
    "swagger-ui.css": ("swagger-ui-dist", "swagger-ui.css"),
}

INSTALL_HINT = (
    "run `make js-deps` in rawexport's source tree (or `npm ci --ignore-scripts --prefix DIR` "
    "with its js/package.json and js/package-lock.json copied into DIR, then set web_assets "
    "to DIR/node_modules)"
)


def default_dir() -> Path:
    """Where `make` installs the packages: PREFIX/js/node_modules of this Python."""
    return Path(sys.prefix) / "js" / "node_modules"


@dataclass
class WebAssets:
    """The pinned packages as found in `directory`: their files, and what is wrong."""

    directory: Path
    files: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def find(cls, configured: str = "") -> WebAssets:
        found = cls(Path(configured) if configured else default_dir())
        usable = {package for package in PINNED if found._usable(package)}
        for name, (package, inside) in FILES.items():
            path = found.directory / package / inside
            if package in usable and path.is_file():
                found.files[name] = path
            elif package in usable:
                found.problems.append(f"{path} is missing")
        return found

    def _usable(self, package: str) -> bool:
        """The package is installed at its pinned version (else a problem is recorded)."""
        meta = self.directory / package / "package.json"
        want = PINNED[package]
        try:
            version = json.loads(meta.read_text(encoding="utf-8"))["version"]
        except (OSError, ValueError, KeyError, TypeError):
            self.problems.append(f"npm {package} {want} is not in {self.directory}")
            return False
        if version != want:
            self.problems.append(
                f"npm {package} in {self.directory} is {version}, rawexport serves {want} only"
            )
            return False
        return True

    def advice(self) -> str:
        """What is wrong and what to run; empty when nothing is."""
        return "; ".join(self.problems) + f": {INSTALL_HINT}" if self.problems else ""

    def warn(self) -> None:
        if self.problems:
            log.warning(
                "web assets: %s (the console works without live refresh, /docs lists routes)",
                self.advice(),
                extra={"event": "web_assets_missing", "directory": str(self.directory)},
            )

    def serve(self, request: Request) -> Response:
        """GET .../{name}: one of the listed files, or 404 saying why."""
        name = request.path_params["name"]
        path = self.files.get(name)
        if path is None:
            detail = "Not Found: not installed on this server" if name in FILES else "Not Found"
            raise HTTPException(404, detail)
        return FileResponse(path)
