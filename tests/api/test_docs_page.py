"""/docs and the console's htmx come from rawexport itself: npm packages `make` installs at
the versions js/package-lock.json pins, none of them committed; without them the console
and /docs still work, and what to run is said."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rawexport.api.assets import FILES, PINNED, WebAssets, default_dir
from rawexport.api.console import CSP
from rawexport.api.headers import DOCS_CSP
from tests.conftest import World
from tests.console.test_console import ADMIN, sign_in

REPO = Path(__file__).parent.parent.parent


def test_docs_page_loads_everything_from_rawexport(world: World) -> None:
    page = world.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-security-policy"] == DOCS_CSP
    assert CSP.replace("img-src 'self';", "img-src 'self' data:;") == DOCS_CSP
    assert page.headers["x-frame-options"] == "DENY"
    scripts = re.findall(r"<script([^>]*)>", page.text)
    assert len(scripts) == 2 and all(" src=" in s for s in scripts)  # no inline script
    assert " style=" not in page.text and "<style" not in page.text
    urls = re.findall(r"(?:src|href)='([^']+)'", page.text)
    assert len(urls) >= 5 and all(u.startswith("/") and not u.startswith("//") for u in urls)
    for url in urls:
        r = world.client.get(url)
        assert r.status_code == 200, url
        if url != "/openapi.json":
            assert "content-security-policy" in r.headers, url
    bundle = world.client.get("/docs/static/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content
    assert bundle.headers["cache-control"] == "public, max-age=3600"
    assert (
        world.client.get("/docs/static/swagger-ui.css")
        .headers["content-type"]
        .startswith("text/css")
    )
    assert world.client.get("/docs/static/index.html").status_code == 404  # listed files only


def test_docs_under_a_public_url_path(make_world: Callable[..., World]) -> None:
    w = make_world(public_url="http://testserver/export")
    page = w.client.get("/export/docs").text
    assert "href='/export/docs/static/swagger-ui.css'" in page
    assert "data-spec='/export/openapi.json'" in page
    assert w.client.get("/export/docs/static/swagger-ui-bundle.js").status_code == 200


def test_pins_are_the_lock_files() -> None:
    package = json.loads((REPO / "js" / "package.json").read_text())
    lock = json.loads((REPO / "js" / "package-lock.json").read_text())
    for name, version in PINNED.items():
        assert package["dependencies"][name] == version
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
        assert lock["packages"][f"node_modules/{name}"]["integrity"].startswith("sha512-")
    assert {package for package, _ in FILES.values()} == set(PINNED)


def test_no_packaged_file_is_committed() -> None:
    """The repository holds none of the packages' files (they are installed, not copied)."""
    installed = WebAssets.find()
    assert installed.problems == [], installed.problems  # `make` installed them
    theirs = {p.read_bytes() for p in installed.files.values()}
    ours = [p for p in (REPO / "src").rglob("*") if p.is_file() and p.suffix in (".js", ".css")]
    assert ours and not [p for p in ours if p.read_bytes() in theirs]
    assert not list((REPO / "src").rglob("htmx*"))


def test_without_the_packages_the_console_and_docs_still_work(
    make_world: Callable[..., World], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="rawexport.api"):
        w = make_world(admin_token=ADMIN, web_assets=str(tmp_path / "none"))
    said = [
        r.getMessage() for r in caplog.records if getattr(r, "event", "") == "web_assets_missing"
    ]
    assert len(said) == 1 and "make js-deps" in said[0]
    assert all(f"npm {name} {version} is not in" in said[0] for name, version in PINNED.items())
    for url in ("/console/static/vendor/htmx.min.js", "/docs/static/swagger-ui-bundle.js"):
        r = w.client.get(url)
        assert r.status_code == 404 and "not installed" in r.json()["message"]
        assert r.headers["content-security-policy"]
    docs = w.client.get("/docs")
    assert (
        docs.status_code == 200
        and "/v2/insights/{export_type}/{ai}/{export_date}.json" in docs.text
    )
    assert sign_in(w, ADMIN).status_code == 303
    assert "Projects" in w.client.get("/console/").text


def test_another_version_is_not_served(tmp_path: Path) -> None:
    modules = tmp_path / "node_modules"
    shutil.copytree(default_dir() / "htmx.org", modules / "htmx.org")
    meta = modules / "htmx.org" / "package.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": "9.9.9"}))
    found = WebAssets.find(str(modules))
    assert "htmx.min.js" not in found.files
    assert any("is 9.9.9, rawexport serves 2.0.11 only" in p for p in found.problems)
