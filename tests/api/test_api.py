import hashlib
import json
import re
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from rawexport.schema import DATA_TYPE_NAMES, V1_TYPE_NAMES
from rawexport.timeutil import HOUR_MS, parse_export_date
from tests.conftest import CURRENT_HOUR, NOW, World

PAST = CURRENT_HOUR - 3 * HOUR_MS  # 2025-01-10 09:00 Beijing
ENVELOPE = [
    "status",
    "downloadLinks",
    "exportType",
    "dataType",
    "exportDate",
    "exportVersion",
    "requestTime",
    "errorMsg",
]


def keys_in_order(raw: str) -> list[str]:
    return list(json.loads(raw, object_pairs_hook=lambda pairs: dict(pairs)))


def expires_of(link: str) -> int:
    return int(parse_qs(urlsplit(link).query)["expires"][0])


def test_envelope_fields_in_order(world: World) -> None:
    world.finish("page", PAST)
    url = f"/v2/insights/hour/page/{world.project.ai}/2025011009.json"
    r = world.client.get(url, headers=world.headers())
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert re.findall(r'"(\w+)":', r.text)[:1] == ["status"]
    assert keys_in_order(r.text) == ENVELOPE  # exactly GrowingIO's, by default
    body = r.json()
    assert body["status"] == "FINISHED" and len(body["downloadLinks"]) == 1
    # rawexport's manifest links when asked for (rawexport pull asks)
    r = world.client.get(url + "?manifest=true", headers=world.headers())
    assert keys_in_order(r.text) == [*ENVELOPE, "manifest"]
    assert r.json()["downloadLinks"] == body["downloadLinks"]
    manifest = r.json()["manifest"]
    assert len(manifest) == 1 and "/_manifest.json?expires=" in manifest[0]
    assert body["exportType"] == "hour" and body["dataType"] == "page"
    assert body["exportDate"] == "2025011009" and body["exportVersion"] == "v2"
    assert body["requestTime"] == "2025-01-10 12:30" and body["errorMsg"] == ""
    # the all-types call drops dataType and keys links by type
    r = world.client.get(
        f"/v2/insights/hour/{world.project.ai}/2025011009.json", headers=world.headers()
    )
    assert keys_in_order(r.text) == [k for k in ENVELOPE if k != "dataType"]
    all_links = r.json()["downloadLinks"]
    assert list(all_links) == list(DATA_TYPE_NAMES) and r.json()["status"] == "RUNNING"
    assert all(v == [] for v in all_links.values())


@pytest.mark.parametrize(
    ("export_type", "date", "label"),
    [
        ("day", "20250109", "20250109"),
        ("day", "2025010915", "20250109"),
        ("day", "202501091530", "20250109"),
        ("hour", "2025010915", "2025010915"),
        ("hour", "202501091530", "2025010915"),
    ],
)
def test_export_date_is_truncated(world: World, export_type: str, date: str, label: str) -> None:
    r = world.client.get(
        f"/v2/insights/{export_type}/visit/{world.project.ai}/{date}.json",
        headers={"Authorization": world.token},
    )
    assert r.status_code == 200 and r.json()["exportDate"] == label


def test_expire_default_and_range(world: World) -> None:
    world.finish("page", PAST)
    headers = {"Authorization": world.token}
    base = f"/v2/insights/hour/page/{world.project.ai}/2025011009.json"
    r = world.client.get(base, headers=headers)
    assert expires_of(r.json()["downloadLinks"][0]) == NOW + 5 * 60_000
    world.clock.now += 10 * 60_000  # past the first links' life
    r = world.client.get(base + "?expire=10080", headers=headers)
    assert expires_of(r.json()["downloadLinks"][0]) == world.clock.now + 10080 * 60_000
    world.clock.now += 11_000 * 60_000
    r = world.client.get(base + "?expire=1", headers=headers)
    assert expires_of(r.json()["downloadLinks"][0]) == world.clock.now + 60_000


def test_repeated_request_returns_identical_links(world: World) -> None:
    world.finish("page", PAST, [b"a", b"b"])
    headers = world.headers()
    base = f"/v2/insights/hour/page/{world.project.ai}/2025011009.json"
    first = world.client.get(base + "?expire=5", headers=headers).json()["downloadLinks"]
    world.clock.now += 60_000
    # 4 of 5 minutes left, 6 asked: at least half of it, so the same links, not extended
    again = world.client.get(base + "?expire=6", headers=headers).json()["downloadLinks"]
    assert again == first and len(first) == 2
    # 100 minutes asked: 4 left is less than half, so new links (issue 13, point 8)
    longer = world.client.get(base + "?expire=100", headers=headers).json()["downloadLinks"]
    assert longer != first
    world.clock.now += 5 * 60_000
    assert world.client.get(base, headers=headers).json()["downloadLinks"] != first


def test_day_and_all_types(world: World) -> None:
    day = parse_export_date("day", "20250109")
    for t in DATA_TYPE_NAMES:
        for hour in day.hours:
            world.finish(t, hour, [] if t == "vstr" else None)
    headers = {"Authorization": world.token}
    r = world.client.get(f"/v2/insights/day/{world.project.ai}/20250109.json", headers=headers)
    body = r.json()
    assert body["status"] == "FINISHED" and body["exportDate"] == "20250109"
    assert {t: len(v) for t, v in body["downloadLinks"].items()} == {
        t: 0 if t == "vstr" else 24 for t in DATA_TYPE_NAMES
    }
    one = world.client.get(
        f"/v2/insights/day/action/{world.project.ai}/20250109.json", headers=headers
    ).json()
    assert one["downloadLinks"] == body["downloadLinks"]["action"]


def test_v1(world: World) -> None:
    headers = world.headers()
    ai = world.project.ai
    r = world.client.get(f"/insights/{ai}/2025011009.json", headers=headers)
    assert r.json() == {"status": "RUNNING", "downlinks": []}
    for t in V1_TYPE_NAMES:
        world.finish(t, PAST, version="v1")
    r = world.client.get(f"/insights/{ai}/2025011009.json", headers=headers)
    assert keys_in_order(r.text) == ["status", "downlinks"]
    assert r.json()["status"] == "FINISHED" and len(r.json()["downlinks"]) == 7
    r = world.client.get(f"/insights/{ai}/2025011009.json?manifest=1", headers=headers)
    assert keys_in_order(r.text) == ["status", "downlinks", "manifest"]
    assert len(r.json()["manifest"]) == 7
    assert world.client.get(f"/insights/{ai}/20250109.json", headers=headers).json() == {
        "status": "RUNNING",
        "downlinks": [],
    }
    assert world.client.get(f"/insights/{ai}/20240109.json", headers=headers).json() == {
        "status": "NOT_EXISTS",
        "downlinks": [],
    }
    world.fail("visit", PAST - HOUR_MS, "bad input file", version="v1")
    r = world.client.get(f"/insights/{ai}/2025011008.json", headers=headers)
    assert r.json() == {"status": "ERROR", "downlinks": []}  # GrowingIO's v1 has no errorMsg
    assert "bad input file" in unquote(r.headers["x-rawexport-error"])
    r = world.client.get(f"/insights/{ai}/2025011008.json?manifest=true", headers=headers)
    assert r.json()["status"] == "ERROR" and "bad input file" in r.json()["errorMsg"]


def test_error_status_carries_the_jobs_error(world: World) -> None:
    world.fail("page", PAST, "no space left on device")
    r = world.client.get(
        f"/v2/insights/hour/page/{world.project.ai}/2025011009.json",
        headers={"Authorization": world.token},
    )
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ERROR"
    assert body["errorMsg"] == "no space left on device" and body["downloadLinks"] == []


def test_rate_limit_delays_then_refuses_per_credential(make_world: Callable[..., World]) -> None:
    # nginx limit_req: 2 at once, then one every 1/rate s; 429 only past the queue bound.
    w = make_world(rate_limit=2.0, rate_burst=2, rate_queue=3, rate_max_delay=60)
    other, _, other_token = w.add_project("other")
    url = f"/v2/insights/hour/page/{w.project.ai}/2025011009.json"
    headers = {"Authorization": w.token}
    start = w.clock.now
    codes = [w.client.get(url, headers=headers).status_code for _ in range(6)]
    assert codes == [200] * 6
    # The burst went at once, the other four each waited their turn: 0.5 s apart.
    assert w.clock.slept == [0.5] * 4
    assert w.clock.now - start == 2000
    # Another credential is not held up by this one's queue.
    other_url = f"/v2/insights/hour/page/{other.ai}/2025011009.json"
    assert w.client.get(other_url, headers={"Authorization": other_token}).status_code == 200
    assert len(w.clock.slept) == 4


def test_a_code_and_a_token_of_one_project_have_separate_buckets(
    make_world: Callable[..., World],
) -> None:
    """The limit counts per credential (a key pair's codes, or one API token), not per
    project: one credential over its rate does not hold up another of the same project."""
    w = make_world(rate_limit=0.5, rate_burst=1, rate_queue=0)
    url = f"/v2/insights/hour/page/{w.project.ai}/2025011009.json"
    by_code = w.headers()
    second_key = w.catalog.create_key_pair(w.project.id)
    by_other_key = w.headers(second_key)
    by_token = w.token_headers()
    assert w.client.get(url, headers=by_code).status_code == 200
    assert w.client.get(url, headers=by_code).status_code == 429  # its bucket is full
    assert w.client.get(url, headers={"Authorization": w.code()}).status_code == 429  # same key
    assert w.client.get(url, headers=by_token).status_code == 200
    assert w.client.get(url, headers=by_token).status_code == 429
    assert w.client.get(url, headers=by_other_key).status_code == 200
    assert w.clock.slept == []


def test_rate_limit_refuses_past_the_queue(make_world: Callable[..., World]) -> None:
    w = make_world(rate_limit=2.0, rate_burst=2, rate_queue=3, rate_max_delay=60)
    key = f"t{hashlib.sha256(w.token.encode()).hexdigest()[:16]}"
    for _ in range(5):  # 2 at once + 3 queued: what concurrent requests would hold
        w.limiter.take(key)
    url = f"/v2/insights/hour/page/{w.project.ai}/2025011009.json"
    r = w.client.get(url, headers={"Authorization": w.token})
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    body = r.json()
    assert body["status"] == "ERROR" and body["downloadLinks"] == []
    assert "retry after 1 s" in body["errorMsg"]
    w.clock.now += 500  # one place frees up
    assert w.client.get(url, headers={"Authorization": w.token}).status_code == 200


def test_health_openapi_and_docs(world: World) -> None:
    assert world.client.get("/healthz").json() == {"status": "ok"}
    doc = world.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    e2 = paths["/v2/insights/{export_type}/{data_type}/{ai}/{export_date}.json"]["get"]
    params = {p["name"]: p for p in e2["parameters"]}
    assert params["data_type"]["schema"]["enum"] == list(DATA_TYPE_NAMES)
    assert params["export_type"]["schema"]["enum"] == ["hour", "day"]
    assert {"200", "400", "401", "429"} <= set(e2["responses"])
    download = paths["/{prefix}/{file}"]
    assert {"200", "206", "403", "404", "416"} <= set(download["get"]["responses"])
    assert "head" in download and "post" in paths["/auth/token"]
    page = world.client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "/v2/insights/{export_type}/{ai}/{export_date}.json" in page.text


def test_health_reports_a_dead_catalog(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> None:
        raise OSError("catalog down")

    monkeypatch.setattr(world.catalog.engine, "connect", down)
    r = world.client.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "error"


def test_unknown_routes_and_methods_are_json(world: World) -> None:
    r = world.client.get("/nope")
    assert (r.status_code, r.json()) == (404, {"message": "Not Found", "errors": []})
    r = world.client.get("/auth/token")
    assert (r.status_code, r.json()) == (405, {"message": "Method Not Allowed", "errors": []})
    assert "POST" in r.headers["allow"]
    r = world.client.delete(f"/v2/insights/hour/page/{world.project.ai}/2025011009.json")
    assert r.status_code == 405 and r.json()["message"] == "Method Not Allowed"
    r = world.client.post("/some/random/path")
    assert r.status_code == 404
