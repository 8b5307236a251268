"""/auth/token under attack (issue 13, point 3): attempts are paced per client address and
codes per key, a key keeps a bounded number of live codes, dead codes are swept, and keys,
tokens and codes can be revoked from the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from rawexport.cli import main
from rawexport.export.retention import sweep
from rawexport.node import open_services
from rawexport.settings import Settings
from rawexport.store import LocalEventStore
from rawexport.timeutil import DAY_MS
from tests.conftest import World

HOUR_URL = "/v2/insights/hour/page/{ai}/2025011009.json"


def mint(world: World, params: dict[str, str]) -> int:
    r = world.client.post(
        "/auth/token", params=params, headers={"X-Client-Id": world.key.public_key}
    )
    return int(r.status_code)


def test_one_captured_request_mints_codes_only_at_the_rate(world: World) -> None:
    params = world.auth_params()  # one signed request, replayed
    start = world.clock.now
    assert all(mint(world, params) == 200 for _ in range(30))
    # 10 at once, then 1/s (the wait is the test clock's): 20 s for the other 20
    assert world.clock.now - start >= 19_000


def test_failed_attempts_are_paced_and_refused_past_the_queue(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    bad = w.auth_params() | {"auth": "0" * 64}
    codes = [mint(w, bad) for _ in range(15)]
    assert codes == [401] * 15  # wrong, and each one waited its turn
    # Guesses fired faster than the turns come (concurrent, from one address): refused.
    for _ in range(40):
        w.auth_limiter.take("addr:testclient")
    r = w.client.post("/auth/token", params=bad, headers={"X-Client-Id": w.key.public_key})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_a_key_keeps_a_bounded_number_of_live_codes(make_world: Callable[..., World]) -> None:
    w = make_world(auth_max_live_codes=3)
    codes = [w.code() for _ in range(5)]
    url = HOUR_URL.format(ai=w.project.ai)
    status = [
        w.client.get(url, headers={"X-Client-Id": w.key.public_key, "Authorization": c}).status_code
        for c in codes
    ]
    assert status == [401, 401, 200, 200, 200]  # the two oldest were revoked


def test_dead_codes_are_swept(world: World) -> None:
    live = world.code()
    world.code()
    store = LocalEventStore(world.settings.events_dir)
    # nothing is dead yet: the sweep keeps both codes
    assert (
        sweep(world.catalog, store, world.blobs, world.clock.now, orphan_age_ms=0).dead_auth_codes
        == 0
    )
    assert world.catalog.auth_code_key(live, world.clock.now) is not None
    later = world.clock.now + 31 * DAY_MS  # both expired (30 days)
    report = sweep(world.catalog, store, world.blobs, later, orphan_age_ms=0)
    assert report.dead_auth_codes == 2


def test_revoke_commands(tmp_path: Path) -> None:
    home = tmp_path / "home"
    services = open_services(Settings(home=home))
    p = services.catalog.create_project("r")
    key = services.catalog.create_key_pair(p.id)
    token = services.catalog.create_api_token(p.id)
    code = services.catalog.issue_auth_code(key.id, days=30, strict=False, now=1)
    services.close()
    run = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        result = run.invoke(main, [*args, "--home", str(home)])
        return result.exit_code, result.output

    services = open_services(Settings(home=home))
    try:
        assert services.catalog.auth_code_key(code, 2) is not None
        exit_code, out = cli("key", "revoke-codes", "--public-key", key.public_key)
        assert exit_code == 0 and json.loads(out)["revoked_codes"] == 1
        assert services.catalog.auth_code_key(code, 2) is None
        assert services.catalog.key_pair(key.public_key) is not None  # the key stays
        exit_code, out = cli("key", "revoke", "--public-key", key.public_key)
        assert exit_code == 0 and json.loads(out)["revoked"] is True
        assert services.catalog.key_pair(key.public_key) is None
        assert services.catalog.project_for_token(token) == p.id
        exit_code, out = cli("token", "revoke", "--token", token)
        assert exit_code == 0 and services.catalog.project_for_token(token) is None
        exit_code, out = cli("token", "revoke", "--token", "nope")
        assert exit_code == 1 and "no such token" in out
    finally:
        services.close()
