"""The API's caches of catalog reads (api/cache.py) never hide a change for long: a change
made through the serving process is seen by its next request; one made by another node or
a command (another Catalog on the same database) within `cache_seconds`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rawexport.api import health as app_module
from rawexport.catalog import Catalog
from rawexport.timeutil import DAY_MS, HOUR_MS, beijing_hour_label
from tests.conftest import CURRENT_HOUR, World

BOUND = 0.5  # cache_seconds of these tests
PAST = CURRENT_HOUR - 3 * HOUR_MS


def hour_url(world: World) -> str:
    return f"/v2/insights/hour/page/{world.project.ai}/{beijing_hour_label(PAST)}.json?expire=60"


def get(world: World, headers: dict[str, str]) -> Any:
    return world.client.get(hour_url(world), headers=headers)


@contextmanager
def another_node(world: World) -> Iterator[Catalog]:
    """The same database through another Catalog: what a second node or a CLI sees."""
    other = Catalog(world.settings.database_url, run_migrations=False)
    try:
        yield other
    finally:
        other.close()


def within_bound(check: Callable[[], bool]) -> bool:
    """check() turns true by the time cache_seconds have passed."""
    deadline = time.monotonic() + BOUND + 0.3
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.fixture
def w(make_world: Callable[..., World]) -> World:
    world = make_world(cache_seconds=BOUND)
    world.finish("page", PAST)
    return world


def test_a_revoked_token_is_refused(w: World) -> None:
    here, there = w.token, w.catalog.create_api_token(w.project.id)
    for token in (here, there):
        assert get(w, {"Authorization": token}).status_code == 200  # now cached
    w.catalog.revoke_api_token(here)
    assert get(w, {"Authorization": here}).status_code == 401  # this node: at once
    assert get(w, {"Authorization": there}).status_code == 200  # cached again
    with another_node(w) as other:
        other.revoke_api_token(there)
    assert within_bound(lambda: get(w, {"Authorization": there}).status_code == 401)


def test_revoked_codes_and_keys_are_refused(w: World) -> None:
    headers = w.headers()
    assert get(w, headers).status_code == 200
    w.catalog.revoke_auth_codes(w.key.public_key)
    assert get(w, headers).status_code == 401  # this node: at once

    headers = w.headers()
    assert get(w, headers).status_code == 200
    with another_node(w) as other:
        other.revoke_key_pair(w.key.public_key)
    assert within_bound(lambda: get(w, headers).status_code == 401)


def test_an_expired_code_is_refused_though_cached(w: World) -> None:
    headers = w.headers()
    assert get(w, headers).status_code == 200
    w.clock.now += 31 * DAY_MS  # codes live 30 days; the cached one must not outlive it
    assert get(w, headers).status_code == 401


def test_a_disabled_export_answers_not_exists(w: World, make_world: Callable[..., World]) -> None:
    assert get(w, w.token_headers()).json()["status"] == "FINISHED"
    w.catalog.set_export(w.project.ai, False)
    assert get(w, w.token_headers()).json()["status"] == "NOT_EXISTS"  # this node: at once

    w2 = make_world(cache_seconds=BOUND)
    w2.finish("page", PAST)
    assert get(w2, w2.token_headers()).json()["status"] == "FINISHED"
    with another_node(w2) as other:
        other.set_export(w2.project.ai, False)
    assert within_bound(lambda: get(w2, w2.token_headers()).json()["status"] == "NOT_EXISTS")


def linked_parts(world: World) -> set[str]:
    body = get(world, world.token_headers()).json()
    return {link.split("?")[0].rsplit("/", 1)[1] for link in body["downloadLinks"]}


def test_a_new_revision_is_linked(w: World) -> None:
    first = linked_parts(w)
    job, _ = w.finish("page", PAST)  # a re-export committed by this node
    assert linked_parts(w) != first  # at once
    second = linked_parts(w)

    mine = w.catalog
    with another_node(w) as other:
        w.catalog = other  # the next revision is committed by another node
        try:
            w.finish("page", PAST)
        finally:
            w.catalog = mine
    assert within_bound(lambda: linked_parts(w) != second)


def test_health_reports_a_catalog_that_died(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    assert w.client.get("/healthz").status_code == 200

    def down() -> None:
        raise OSError("catalog down")

    monkeypatch.setattr(w.catalog.engine, "connect", down)
    deadline = time.monotonic() + app_module.HEALTH_SECONDS + 0.5
    status = 200
    while status == 200 and time.monotonic() < deadline:
        status = w.client.get("/healthz").status_code
        time.sleep(0.05)
    assert status == 503
