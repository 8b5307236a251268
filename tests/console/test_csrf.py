"""Every state-changing console action checks the session's CSRF token: each POST route of
the console's route table (every action name expanded), posted without the token, with a
wrong one and with another session's, is refused with nothing changed; with the right
token the same form goes through (so the refusal is the CSRF check's, not the form's)."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from rawexport.api.console import PAGES
from rawexport.api.console.actions import ACTIONS
from rawexport.catalog.tables import metadata
from rawexport.timeutil import beijing_hour_label
from tests.conftest import World
from tests.console.test_console import ADMIN, PAST, csrf_of, op, sign_in  # noqa: F401
from tests.console.test_console_delivery import delivered

# Values of each path parameter of a POST route; a new parameter fails here until it is
# given values, a new action name or POST route is covered without a change.
PARAMS: dict[str, tuple[str, ...]] = {"ai": ("{ai}",), "action": ACTIONS}


def post_routes() -> list[str]:
    out = []
    for path, _, methods in PAGES:
        if "POST" not in methods:
            continue
        names = re.findall(r"{(\w+)}", path)
        assert set(names) <= set(PARAMS), f"{path}: give test values for {names}"
        for values in itertools.product(*(PARAMS[n] for n in names)):
            out.append(path.format(**dict(zip(names, values, strict=True))))
    return out


POSTS = post_routes()


def form_for(w: World, path: str) -> dict[str, str]:
    """A form that the route carries out when its CSRF token is right."""
    if path == "/signin":
        return {"token": ADMIN}
    [token] = [c for c in w.catalog.credentials(w.project.id) if c.kind == "token"]
    delivery: dict[str, str] = {}
    if path.endswith(("/redeliver", "/pause", "/resume")):
        dest, d = delivered(w, w.settings.home / "landing")
        if path.endswith("/resume"):
            w.catalog.pause_destination(dest.id, "paused by the tests", w.clock.now)
        delivery = {"delivery": str(d.id), "destination": dest.name}
    return {
        **delivery,
        "hour": beijing_hour_label(PAST),
        "data_type": "page",
        "from": beijing_hour_label(PAST),
        "to": beijing_hour_label(PAST),
        "enabled": "off",
        "days": "30",
        "description": "csrf test",
        "kind": "token",
        "id": str(token.id),
    }


def catalog_state(w: World) -> dict[str, list[Any]]:
    with w.catalog.tx() as c:
        return {
            name: sorted(map(tuple, c.execute(select(table)).all()), key=repr)
            for name, table in metadata.tables.items()
        }


def test_the_table_is_what_the_app_mounts(op: World) -> None:  # noqa: F811
    """Every POST route mounted under /console is in the table the tests are made from."""
    app = op.client.app
    assert isinstance(app, Starlette)
    [console] = [r for r in app.routes if isinstance(r, Mount) and r.path == "/console"]
    mounted = {(r.path, m) for r in console.routes if isinstance(r, Route) for m in r.methods or ()}
    assert {(p, "POST") for p, _, ms in PAGES if "POST" in ms} == {
        (p, m) for p, m in mounted if m == "POST"
    }
    assert len(POSTS) == 2 + len(ACTIONS) >= 9


@pytest.mark.parametrize("path", POSTS)
def test_every_post_needs_the_sessions_csrf_token(op: World, path: str) -> None:  # noqa: F811
    url = "/console" + path.format(ai=op.project.ai)
    op.finish("page", PAST)
    form = form_for(op, path)
    other = op.client.__class__(op.client.app)
    foreign = csrf_of(other.get("/console/signin").text)  # another browser's token
    other.close()
    before = catalog_state(op)
    for csrf in (None, "", "not-the-token", foreign):
        data = form if csrf is None else {**form, "csrf": csrf}
        r = op.client.post(url, data=data, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text, (path, csrf, r.status_code)
        assert catalog_state(op) == before, (path, csrf)
    assert op.client.get("/console/", follow_redirects=False).status_code == 200  # still in
    right = csrf_of(op.client.get(f"/console/p/{op.project.ai}").text)
    r = op.client.post(url, data={**form, "csrf": right}, follow_redirects=False)
    assert r.status_code in (200, 303), (path, r.status_code, r.text[-400:])
    assert catalog_state(op) != before, path  # it did something (a sign-in: a session)
