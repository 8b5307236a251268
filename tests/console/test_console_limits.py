"""The console's writes and signed links take turns under the API's per-credential rate
limit, on the same budget as the credential's API requests; every console answer, its
404, 405 and 500 included, carries the security headers."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from rawexport.api.console import CSP, views
from rawexport.api.console.sessions import COOKIE
from rawexport.catalog.tables import issued_links
from rawexport.timeutil import beijing_hour_label
from tests.conftest import World, csv_gz
from tests.console.test_console import ADMIN, PAST, csrf_of, sign_in

LIMITED = {"rate_limit": 2, "rate_burst": 2, "rate_queue": 0}


def links_signed(w: World) -> int:
    with w.catalog.tx() as c:
        return int(c.execute(select(func.count()).select_from(issued_links)).scalar_one())


def test_download_links_share_the_tokens_api_limit(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN, **LIMITED)
    _, [key] = w.finish("page", PAST, parts=[csv_gz("a\n1\n")])
    assert sign_in(w, w.token).status_code == 303  # a read-only project token
    url = f"/console/p/{w.project.ai}/file/{beijing_hour_label(PAST)}/page"
    codes = [w.client.get(url, params={"key": key}, follow_redirects=False) for _ in range(4)]
    assert [r.status_code for r in codes] == [303, 303, 429, 429]
    refused = codes[2]
    assert int(refused.headers["retry-after"]) >= 1 and "rate limit" in refused.text
    assert refused.headers["content-security-policy"] == CSP
    assert links_signed(w) == 2  # a refused click writes nothing
    api = f"/v2/insights/hour/page/{w.project.ai}/{beijing_hour_label(PAST)}.json"
    assert w.client.get(api, headers=w.token_headers()).status_code == 429  # one budget
    w.clock.now += 1000  # two places free up
    assert w.client.get(url, params={"key": key}, follow_redirects=False).status_code == 303


def test_operator_actions_are_limited_too(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN, **LIMITED)
    sign_in(w, ADMIN)
    csrf = csrf_of(w.client.get(f"/console/p/{w.project.ai}").text)
    codes = [
        w.client.post(f"/console/p/{w.project.ai}/token", data={"csrf": csrf}).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    tokens = [c for c in w.catalog.credentials(w.project.id) if c.kind == "token"]
    assert len(tokens) == 1 + 2


def test_over_the_rate_a_console_write_waits_its_turn(make_world: Callable[..., World]) -> None:
    """With a queue (the default), like the API: delayed, not refused."""
    w = make_world(admin_token=ADMIN, rate_limit=2, rate_burst=2)
    sign_in(w, ADMIN)
    csrf = csrf_of(w.client.get(f"/console/p/{w.project.ai}").text)
    for _ in range(4):
        r = w.client.post(f"/console/p/{w.project.ai}/retention", data={"csrf": csrf, "days": "9"})
        assert r.status_code == 200
    assert w.clock.slept == [0.5, 0.5]


SECURITY = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/console/nosuch", 404),
        ("GET", "/console/p/x/y/z/w/v", 404),
        ("GET", "/console/static/nosuch.js", 404),
        ("GET", "/console/static/vendor/nosuch.js", 404),
        ("PUT", "/console/signin", 405),
        ("DELETE", "/console/p/x/rerun", 405),
        ("GET", "/console/", 303),
    ],
)
def test_every_console_answer_has_the_security_headers(
    make_world: Callable[..., World], method: str, path: str, status: int
) -> None:
    w = make_world(admin_token=ADMIN)
    r = w.client.request(method, path, follow_redirects=False)
    assert r.status_code == status
    assert {k: r.headers.get(k) for k in SECURITY} == SECURITY
    assert r.headers["cache-control"] == (
        "public, max-age=3600" if "static" in path else "no-store"
    )


@pytest.mark.parametrize("root", ["", "/export"])  # rawexport under a public_url path
def test_a_console_500_has_them_too(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch, root: str
) -> None:
    w = make_world(admin_token=ADMIN, public_url="http://testserver" + root)
    sign_in_page = w.client.get(f"{root}/console/signin")
    assert sign_in_page.headers["content-security-policy"] == CSP
    csrf = csrf_of(sign_in_page.text)
    w.client.post(f"{root}/console/signin", data={"csrf": csrf, "token": ADMIN})

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(views, "summary", broken)
    client = TestClient(w.client.app, raise_server_exceptions=False)
    client.cookies.set(COOKIE, w.client.cookies[COOKIE], path=f"{root}/console")
    r = client.get(f"{root}/console/")
    assert r.status_code == 500 and re.fullmatch(r"[0-9a-f]{16}", r.json()["requestId"])
    assert {k: r.headers.get(k) for k in SECURITY} == SECURITY
