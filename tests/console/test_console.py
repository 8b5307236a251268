"""The console in-process: sign-in, sessions, CSRF, isolation, actions, and the grid's
statuses against the export API's answers."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from rawexport.api.console import CSP
from rawexport.api.console.sessions import COOKIE, Sessions
from rawexport.timeutil import HOUR_MS, beijing_hour_label
from tests.conftest import CURRENT_HOUR, World, csv_gz

ADMIN = "admin-token-for-the-tests"
PAST = CURRENT_HOUR - 3 * HOUR_MS  # 2025-01-10 09:00 Beijing
DAY = "20250110"


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m is not None, html[:2000]
    return m[1]


def sign_in(w: World, token: str) -> Any:
    page = w.client.get("/console/signin")
    return w.client.post(
        "/console/signin",
        data={"csrf": csrf_of(page.text), "token": token},
        follow_redirects=False,
    )


@pytest.fixture
def op(make_world: Callable[..., World]) -> World:
    w = make_world(admin_token=ADMIN)
    r = sign_in(w, ADMIN)
    assert r.status_code == 303, r.text
    return w


def test_root_redirects_and_a_visitor_must_sign_in(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN)
    r = w.client.get("/", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/")
    r = w.client.get("/console/", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/console/signin")
    r = w.client.get(f"/console/p/{w.project.ai}", follow_redirects=False)
    assert r.status_code == 303
    page = w.client.get("/console/signin")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text and " style=" not in page.text
    static = w.client.get("/console/static/vendor/htmx.min.js")
    assert static.status_code == 200 and b"htmx" in static.content
    assert static.headers["content-security-policy"] == CSP


def test_session_cookie_flags(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN)
    cookie = sign_in(w, ADMIN).headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    flags = {f.strip().split("=")[0] for f in cookie.split(";")}
    assert {"HttpOnly", "SameSite", "Path"} <= flags and "Secure" not in flags
    assert "SameSite=Strict" in cookie and "Path=/console" in cookie
    https = make_world(admin_token=ADMIN, public_url="https://export.example.com")
    # https: Secure (the sign-in page's cookie already; http clients then never send it)
    assert "Secure" in https.client.get("/console/signin").headers["set-cookie"]


def test_bad_tokens_and_missing_csrf_are_refused(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN)
    for bad in ("", "x", ADMIN + "x", ADMIN[:-1], w.token + "x"):
        r = sign_in(w, bad)
        assert r.status_code == 401, bad
        assert "not valid" in r.text and COOKIE + "=" not in r.headers.get("set-cookie", "")
    r = w.client.post("/console/signin", data={"token": ADMIN}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text
    r = w.client.post(
        "/console/signin", data={"token": ADMIN, "csrf": "forged"}, follow_redirects=False
    )
    assert r.status_code == 403
    assert w.client.get("/console/", follow_redirects=False).status_code == 303  # still out


def test_sign_in_is_rate_limited_per_address(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN)
    codes = [sign_in(w, "wrong-token-guess").status_code for _ in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    r = sign_in(w, ADMIN)  # even the right token waits its turn
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_forged_or_tampered_cookies_are_no_session(op: World) -> None:
    good = op.client.cookies[COOKIE]
    body, _, sig = good.rpartition(".")
    for bad in (body + "." + "0" * len(sig), body[:-2] + "." + sig, "garbage", ""):
        op.client.cookies.set(COOKIE, bad, path="/console")
        assert op.client.get("/console/", follow_redirects=False).status_code == 303
    op.client.cookies.set(COOKIE, good, path="/console")
    assert op.client.get("/console/", follow_redirects=False).status_code == 200


def test_operator_session_ends_with_a_new_admin_token(op: World) -> None:
    """A session is bound to the admin token it signed in with: rotating it signs out."""
    cookie = op.client.cookies[COOKIE]
    secret = op.catalog.secret("console_sessions")
    now_s = op.clock.now / 1000
    assert Sessions(secret, ADMIN, 3600, False).decode(cookie, now_s) is not None
    assert Sessions(secret, ADMIN + "-rotated", 3600, False).decode(cookie, now_s) is None
    assert Sessions(secret, "", 3600, False).decode(cookie, now_s) is None
    assert Sessions(secret, ADMIN, 3600, False).decode(cookie, now_s + 13 * 3600) is None


def test_actions_need_the_sessions_csrf_token(op: World) -> None:
    ai = op.project.ai
    op.finish("page", PAST)
    hour = beijing_hour_label(PAST)
    before = len(op.catalog.jobs(op.project.id))
    form = {"hour": hour, "data_type": "page"}
    for data in (form, {**form, "csrf": ""}, {**form, "csrf": "not-the-token"}):
        r = op.client.post(f"/console/p/{ai}/rerun", data=data, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text
    assert len(op.catalog.jobs(op.project.id)) == before  # nothing was queued
    csrf = csrf_of(op.client.get(f"/console/p/{ai}").text)
    r = op.client.post(
        f"/console/p/{ai}/rerun", data={**form, "csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    new = op.catalog.jobs(op.project.id)[before:]
    assert new and {(j.data_type, j.status) for j in new} == {("page", "queued")}


def statuses_in(html: str) -> dict[tuple[str, str], str]:
    cells = re.findall(
        r'<td class="cell [a-z_]+" data-kind="([a-z_0-9]+)" data-hour="(\d{10})" '
        r'data-status="([A-Z_]+)"',
        html,
    )
    return {(k, h): s for k, h, s in cells}


def test_grid_statuses_are_the_apis_hour_by_hour(op: World) -> None:
    """Every cell of the day, v1 row included, against the API's answer for that hour."""
    ai = op.project.ai
    op.finish("page", PAST)
    op.finish("visit", PAST, parts=[])  # an empty hour
    op.fail("action", PAST, "PermanentExportError: event file x.parquet is not readable")
    op.finish("action", PAST - HOUR_MS)
    op.queue("action", PAST - HOUR_MS)  # a newer revision queued: the old one still serves
    op.queue("pvar", PAST - 2 * HOUR_MS)
    for name in ("visit", "page", "action", "action_tag", "custom_attr"):
        op.finish(name, PAST - 4 * HOUR_MS, version="v1")
    op.fail("ads_track_click", PAST - 4 * HOUR_MS, "disk full", version="v1")
    html = op.client.get(f"/console/p/{ai}?day={DAY}").text
    cells = statuses_in(html)
    assert len(cells) == 24 * 11
    seen = set(cells.values())
    assert seen == {"FINISHED", "RUNNING", "ERROR", "NOT_EXISTS"}, seen
    headers = op.token_headers()
    for (kind, hour), status in cells.items():
        url = (
            f"/insights/{ai}/{hour}.json"
            if kind == "v1"
            else f"/v2/insights/hour/{kind}/{ai}/{hour}.json"
        )
        body = op.client.get(url, headers=headers).json()
        assert status == body["status"], (kind, hour, body)
    assert 'class="cell empty"' in html  # the empty hour is told apart
    label = beijing_hour_label(PAST)
    hour_page = op.client.get(f"/console/p/{ai}/hour/{label}/action").text
    assert "is not readable" in hour_page and "Rerun action" in hour_page


def test_a_project_token_sees_its_project_only_and_no_actions(op: World) -> None:
    other, _, _ = op.add_project("other")
    op.client.cookies.clear()
    r = sign_in(op, op.token)
    assert (r.status_code, r.headers["location"]) == (303, "/console/")
    r = op.client.get("/console/", follow_redirects=False)
    assert r.headers["location"] == f"/console/p/{op.project.ai}"
    page = op.client.get(f"/console/p/{op.project.ai}").text
    assert "Project (read only)" in page
    actions = re.findall(r'<form method="post" action="([^"]+)"', page)
    assert actions == ["/console/signout"]
    assert "rawexport pull" in page and op.token not in page
    for url in (f"/console/p/{other.ai}", f"/console/p/{other.ai}/grid"):
        r = op.client.get(url)
        assert r.status_code == 404 and other.name not in r.text
    label = beijing_hour_label(PAST)
    assert op.client.get(f"/console/p/{other.ai}/hour/{label}/page").status_code == 404
    csrf = csrf_of(page)
    for name in ("rerun", "export", "retention", "token", "key", "revoke"):
        data = {"csrf": csrf, "hour": label, "enabled": "off", "days": "3"}
        r = op.client.post(f"/console/p/{op.project.ai}/{name}", data=data)
        assert r.status_code == 403, name
    p = op.catalog.project(op.project.ai)
    assert p is not None and p.export_enabled and p.retention_days == 15


def test_revoking_its_token_ends_a_project_session(op: World) -> None:
    csrf = csrf_of(op.client.get(f"/console/p/{op.project.ai}").text)
    viewer = op.client.__class__(op.client.app)
    page = viewer.get("/console/signin")
    viewer.post("/console/signin", data={"csrf": csrf_of(page.text), "token": op.token})
    assert viewer.get(f"/console/p/{op.project.ai}").status_code == 200
    [token] = [c for c in op.catalog.credentials(op.project.id) if c.kind == "token"]
    r = op.client.post(
        f"/console/p/{op.project.ai}/revoke",
        data={"csrf": csrf, "kind": "token", "id": str(token.id)},
    )
    assert r.status_code == 200 and "Revoked token" in r.text
    r = viewer.get(f"/console/p/{op.project.ai}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/signin"
    viewer.close()


def test_a_new_token_is_shown_once_and_works(op: World) -> None:
    ai = op.project.ai
    csrf = csrf_of(op.client.get(f"/console/p/{ai}").text)
    r = op.client.post(f"/console/p/{ai}/token", data={"csrf": csrf, "description": "etl"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    token = re.findall(r'<code class="secret-value" data-label="API token">(\w+)</code>', r.text)
    assert len(token) == 1 and len(token[0]) == 48
    body = op.client.get(
        f"/v2/insights/hour/page/{ai}/{beijing_hour_label(PAST)}.json",
        headers={"Authorization": token[0]},
    )
    assert body.status_code == 200 and body.json()["status"] == "RUNNING"
    page = op.client.get(f"/console/p/{ai}").text
    assert token[0] not in page and f"{token[0][:5]}*{token[0][-5:]}" in page
    r = op.client.post(f"/console/p/{ai}/key", data={"csrf": csrf})
    private = re.findall(r'data-label="private key">(\w+)<', r.text)
    assert len(private) == 1 and private[0] not in op.client.get(f"/console/p/{ai}").text


def test_operator_actions_take_the_clis_path_and_are_logged(
    op: World, caplog: pytest.LogCaptureFixture
) -> None:
    ai = op.project.ai
    csrf = csrf_of(op.client.get(f"/console/p/{ai}").text)

    def act(name: str, **data: str) -> Any:
        return op.client.post(f"/console/p/{ai}/{name}", data={"csrf": csrf, **data})

    with caplog.at_level(logging.INFO, logger="rawexport.console"):
        r = act("export", enabled="off")
        assert r.status_code == 200 and "Export disabled." in r.text
        assert "Export is disabled" in r.text
        p = op.catalog.project(ai)
        assert p is not None and not p.export_enabled
        act("export", enabled="on")
        assert act("retention", days="30").status_code == 200
        p = op.catalog.project(ai)
        assert p is not None and p.export_enabled and p.retention_days == 30
        r = act("rerun", day="20250109", data_type="page")
        assert "Queued 48 new revision(s)" in r.text  # 24 hours x (page v2 + page v1)
        r = act("backfill", **{"from": "2025010900", "to": "2025010902"})
        assert "Queued 51 new revision(s)" in r.text  # 3 hours x (10 v2 + 7 v1)
    queued = [j for j in op.catalog.jobs(op.project.id) if j.status == "queued"]
    assert len(queued) == 48 + 51
    logged = [r for r in caplog.records if getattr(r, "event", "") == "console_action"]
    assert [vars(r)["action"] for r in logged] == [
        "export", "export", "retention", "rerun", "backfill"
    ]  # fmt: skip
    assert all(vars(r)["ai"] == ai and vars(r)["role"] == "operator" for r in logged)


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("get", "/console/p/{ai}?day=2025-01-10", None, 400),
        ("get", "/console/p/{ai}?day=20251340", None, 400),
        ("get", "/console/p/{ai}/hour/2025011024/page", None, 400),
        ("get", "/console/p/{ai}/hour/2025011009/nosuch", None, 404),
        ("get", "/console/p/0000000000000000", None, 404),
        ("get", "/console/p/{ai}/file/2025011009/page?key=../../etc/passwd", None, 404),
        ("post", "/console/p/{ai}/retention", {"days": "abc"}, 400),
        ("post", "/console/p/{ai}/retention", {"days": "0"}, 400),
        ("post", "/console/p/{ai}/rerun", {}, 400),
        ("post", "/console/p/{ai}/rerun", {"hour": "2025011012"}, 400),  # the open hour
        ("post", "/console/p/{ai}/rerun", {"hour": "2025011009", "data_type": "x"}, 400),
        ("post", "/console/p/{ai}/backfill", {"from": "2025011009", "to": "2025011001"}, 400),
        ("post", "/console/p/{ai}/revoke", {"kind": "token", "id": "999"}, 404),
        ("post", "/console/p/{ai}/nosuch", {}, 404),
    ],
)
def test_bad_input_is_a_clear_4xx(
    op: World, method: str, path: str, data: dict[str, str] | None, status: int
) -> None:
    url = path.format(ai=op.project.ai)
    if method == "get":
        r = op.client.get(url)
    else:
        csrf = csrf_of(op.client.get(f"/console/p/{op.project.ai}").text)
        r = op.client.post(url, data={"csrf": csrf, **(data or {})})
    assert r.status_code == status, r.text[-600:]
    assert 'class="error"' in r.text


def test_download_buttons_sign_a_link_to_the_hours_own_files(op: World) -> None:
    ai = op.project.ai
    data = csv_gz("a,b\n1,2\n3,4\n")
    job, [key] = op.finish("page", PAST, parts=[data])
    label = beijing_hour_label(PAST)
    page = op.client.get(f"/console/p/{ai}/hour/{label}/page").text
    assert hashlib.sha256(data).hexdigest() in page and "Download" in page
    assert "expires=" not in page  # links are signed at the click, not put in the page
    r = op.client.get(f"/console/p/{ai}/file/{label}/page", params={"key": key},
                      follow_redirects=False)  # fmt: skip
    assert r.status_code == 303 and "sign=" in r.headers["location"]
    link = r.headers["location"].removeprefix("http://testserver")
    assert op.client.get(link).content == data
    other, _, _ = op.add_project("other")
    _, [foreign] = op.finish("page", PAST, project=other)
    r = op.client.get(f"/console/p/{ai}/file/{label}/page", params={"key": foreign})
    assert r.status_code == 404
    assert job.manifest_key is not None
    r = op.client.get(f"/console/p/{ai}/file/{label}/page", params={"key": job.manifest_key})
    assert r.status_code == 200 and r.json() == {"parts": []}


def test_empty_states(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN)
    sign_in(w, ADMIN)
    w.catalog.set_export(w.project.ai, False)
    page = w.client.get(f"/console/p/{w.project.ai}").text
    assert "Export is disabled" in page
    assert set(statuses_in(page).values()) == {"NOT_EXISTS"}
    overview = w.client.get("/console/").text
    assert '<span class="badge off">off</span>' in overview


def test_no_projects_yet(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN)
    sign_in(w, ADMIN)
    with w.catalog.tx() as c:
        from rawexport.catalog.tables import projects

        c.execute(projects.delete())
    page = w.client.get("/console/").text
    assert "No projects yet." in page and "rawexport project create" in page


def test_without_an_admin_token_nobody_is_operator(make_world: Callable[..., World]) -> None:
    w = make_world()
    assert sign_in(w, "").status_code == 401
    assert "operator sign-in is off" in w.client.get("/console/signin").text
    r = sign_in(w, w.token)
    assert r.status_code == 303
    page = w.client.get(f"/console/p/{w.project.ai}").text
    assert "Project (read only)" in page
