"""Console sessions live server-side (the catalog's console_sessions): sign-out ends every
copy of the cookie on every node sharing the catalog, and so does revoking the token the
session was opened with."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from rawexport.api.app import create_app
from rawexport.api.console.sessions import COOKIE, OPERATOR, Sessions
from rawexport.catalog import Catalog
from rawexport.catalog.tables import console_sessions
from tests.conftest import World
from tests.console.test_console import ADMIN, csrf_of, op, sign_in  # noqa: F401


def live_rows(w: World) -> int:
    with w.catalog.tx() as c:
        return int(c.execute(select(func.count()).select_from(console_sessions)).scalar_one())


def with_cookie(w: World, value: str) -> TestClient:
    client = TestClient(w.client.app)
    client.cookies.set(COOKIE, value, path="/console")
    return client


def sign_out(client: TestClient, ai: str) -> None:
    csrf = csrf_of(client.get(f"/console/p/{ai}").text)
    r = client.post("/console/signout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/signin"


def test_sign_out_ends_every_copy_of_the_cookie(op: World) -> None:  # noqa: F811
    copied = op.client.cookies[COOKIE]
    thief = with_cookie(op, copied)
    assert thief.get("/console/", follow_redirects=False).status_code == 200
    csrf = csrf_of(thief.get(f"/console/p/{op.project.ai}").text)
    assert live_rows(op) == 1
    sign_out(op.client, op.project.ai)
    assert live_rows(op) == 0
    r = thief.get("/console/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/signin"
    r = thief.post(f"/console/p/{op.project.ai}/token", data={"csrf": csrf})
    assert r.status_code == 403 and "Sign in first" in r.text
    assert [c.kind for c in op.catalog.credentials(op.project.id)].count("token") == 1
    thief.close()


@pytest.fixture
def node_b(op: World) -> Iterator[TestClient]:  # noqa: F811
    """A second node: its own app and catalog connection over the same catalog."""
    catalog = Catalog(op.settings.database_url)
    app = create_app(op.settings, catalog, op.blobs, clock=op.clock)
    with TestClient(app) as client:
        yield client
    catalog.close()


def test_sign_out_on_one_node_ends_the_session_on_the_other(
    op: World,  # noqa: F811
    node_b: TestClient,
) -> None:
    node_b.cookies.set(COOKIE, op.client.cookies[COOKIE], path="/console")
    assert node_b.get("/console/", follow_redirects=False).status_code == 200
    sign_out(op.client, op.project.ai)  # on node A
    assert node_b.get("/console/", follow_redirects=False).status_code == 303
    # and the other way round
    node_b.cookies.clear()
    page = node_b.get("/console/signin")
    data = {"csrf": csrf_of(page.text), "token": ADMIN}
    assert node_b.post("/console/signin", data=data, follow_redirects=False).status_code == 303
    op.client.cookies.clear()
    op.client.cookies.set(COOKIE, node_b.cookies[COOKIE], path="/console")
    assert op.client.get("/console/", follow_redirects=False).status_code == 200
    sign_out(node_b, op.project.ai)
    assert op.client.get("/console/", follow_redirects=False).status_code == 303


def test_revoking_the_token_deletes_its_sessions(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN)
    assert sign_in(w, w.token).status_code == 303
    other = w.catalog.create_api_token(w.project.id, "other")
    second = TestClient(w.client.app)
    page = second.get("/console/signin")
    second.post("/console/signin", data={"csrf": csrf_of(page.text), "token": other})
    assert live_rows(w) == 2
    assert w.client.get(f"/console/p/{w.project.ai}").status_code == 200
    assert w.catalog.revoke_api_token(w.token)  # `rawexport token revoke`
    assert live_rows(w) == 1  # the other token's session stays
    r = w.client.get(f"/console/p/{w.project.ai}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/signin"
    assert second.get(f"/console/p/{w.project.ai}").status_code == 200
    second.close()


def test_signing_in_again_ends_the_previous_sign_in(op: World) -> None:  # noqa: F811
    before = op.client.cookies[COOKIE]
    csrf = csrf_of(op.client.get(f"/console/p/{op.project.ai}").text)
    r = op.client.post("/console/signin", data={"csrf": csrf, "token": ADMIN})
    assert r.status_code == 200 and live_rows(op) == 1
    old = with_cookie(op, before)
    assert old.get("/console/", follow_redirects=False).status_code == 303
    assert op.client.get("/console/", follow_redirects=False).status_code == 200
    old.close()


def test_expired_sessions_end_and_are_forgotten(make_world: Callable[..., World]) -> None:
    w = make_world(admin_token=ADMIN, console_session_hours=1)
    sign_in(w, ADMIN)
    assert w.client.get("/console/", follow_redirects=False).status_code == 200
    w.clock.now += 3600 * 1000 + 1
    assert w.client.get("/console/", follow_redirects=False).status_code == 303
    w.client.cookies.clear()
    sign_in(w, ADMIN)  # a new sign-in forgets the expired one
    assert live_rows(w) == 1


def test_a_signed_cookie_without_its_sign_in_is_refused(op: World) -> None:  # noqa: F811
    """A cookie is not enough: one made with the signing secret but never signed in (or
    from before server-side sessions) opens nothing."""
    now_s = op.clock.now / 1000
    minted = Sessions(op.catalog.secret("console_sessions"), ADMIN, 3600, False)
    cookie = minted.encode(minted.new(OPERATOR, now_s))
    client = with_cookie(op, cookie)
    assert client.get("/console/", follow_redirects=False).status_code == 303
    client.close()
