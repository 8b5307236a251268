"""Every endpoint, given bad input, answers its one error shape and never a 5xx."""

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest

from rawexport.schema import DATA_TYPE_NAMES
from tests.conftest import World

ERROR_BODY = {"message", "errors"}
BAD = "请求参数不合法，"
TOO_LONG = "过期时间应小于7天"
E2 = "/v2/insights/{t}/{d}/{ai}/{date}.json"
E3 = "/v2/insights/{t}/{ai}/{date}.json"
V1 = "/insights/{ai}/{date}.json"


def assert_error(r: Any, status: int, message: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"message": message, "errors": []}


def assert_envelope(r: Any, all_types: bool, error: str) -> None:
    assert r.status_code == 400, r.text
    keys = list(json.loads(r.text))
    expected = ["status", "downloadLinks", "exportType", "dataType", "exportDate"]
    expected += ["exportVersion", "requestTime", "errorMsg"]
    if all_types:
        expected.remove("dataType")
    assert keys == expected
    body = r.json()
    assert body["status"] == "ERROR" and body["errorMsg"] == error
    assert body["exportVersion"] == "v2"
    links = {t: [] for t in DATA_TYPE_NAMES} if all_types else []
    assert body["downloadLinks"] == links


BAD_V2 = [
    # (export_type, data_type, date, query, errorMsg)
    ("week", "page", "20250109", "", BAD + "week"),
    ("HOUR", "page", "2025010912", "", BAD + "HOUR"),
    ("hour", "pages", "2025010912", "", BAD + "pages"),
    ("hour", "custom_attr", "2025010912", "", BAD + "custom_attr"),
    ("hour", "page", "20250109", "", BAD + "20250109"),
    ("hour", "page", "2025010924", "", BAD + "2025010924"),
    ("hour", "page", "202501091260", "", BAD + "202501091260"),
    ("day", "page", "2025", "", BAD + "2025"),
    ("day", "page", "20251301", "", BAD + "20251301"),
    ("day", "page", "20250230", "", BAD + "20250230"),
    ("day", "page", "abcdefgh", "", BAD + "abcdefgh"),
    ("day", "page", "202501091", "", BAD + "202501091"),
    ("day", "page", "2025-01-09", "", BAD + "2025-01-09"),
    ("day", "page", "9" * 200, "", BAD + "9" * 200),
    ("day", "page", "20250109", "?expire=0", BAD + "0"),
    ("day", "page", "20250109", "?expire=-1", BAD + "-1"),
    ("day", "page", "20250109", "?expire=abc", BAD + "abc"),
    ("day", "page", "20250109", "?expire=1.5", BAD + "1.5"),
    ("day", "page", "20250109", "?expire=", BAD),
    ("day", "page", "20250109", "?expire=%EF%BC%95", BAD + "５"),
    ("day", "page", "20250109", "?expire=10081", TOO_LONG),
    ("day", "page", "20250109", "?expire=" + "9" * 5000, TOO_LONG),
]


@pytest.mark.parametrize(("t", "d", "date", "query", "error"), BAD_V2)
def test_v2_bad_parameters(world: World, t: str, d: str, date: str, query: str, error: str) -> None:
    headers = world.headers()
    ai = world.project.ai
    r = world.client.get(E2.format(t=t, d=d, ai=ai, date=date) + query, headers=headers)
    assert_envelope(r, False, error)
    assert r.json()["exportType"] == t and r.json()["dataType"] == d
    if d in DATA_TYPE_NAMES:
        r = world.client.get(E3.format(t=t, ai=ai, date=date) + query, headers=headers)
        assert_envelope(r, True, error)


def test_echoes_the_truncated_date_when_only_expire_is_bad(world: World) -> None:
    url = E2.format(t="hour", d="page", ai=world.project.ai, date="202501091230")
    r = world.client.get(url + "?expire=0", headers={"Authorization": world.token})
    assert r.json()["exportDate"] == "2025010912"


@pytest.mark.parametrize(
    ("date", "query", "error"),
    [
        ("2025", "", BAD + "2025"),
        ("202501091", "", BAD + "202501091"),
        ("202501091230", "", BAD + "202501091230"),
        ("2025010924", "", BAD + "2025010924"),
        ("abcdefgh", "", BAD + "abcdefgh"),
        ("20250109", "?expire=0", BAD + "0"),
        ("20250109", "?expire=10081", TOO_LONG),
    ],
)
def test_v1_bad_parameters(world: World, date: str, query: str, error: str) -> None:
    url = V1.format(ai=world.project.ai, date=date) + query
    r = world.client.get(url, headers=world.headers())
    assert r.status_code == 400
    # GrowingIO's v1 answer has no errorMsg: the text is in a header, or the body when asked
    assert r.json() == {"status": "NOT_EXISTS", "downlinks": []}
    assert unquote(r.headers["x-rawexport-error"]) == error
    joined = url + ("&" if query else "?") + "manifest=true"
    r = world.client.get(joined, headers=world.headers())
    assert list(json.loads(r.text)) == ["status", "downlinks", "errorMsg"]
    assert r.json() == {"status": "NOT_EXISTS", "downlinks": [], "errorMsg": error}


@pytest.mark.parametrize(
    "url",
    [
        E2.format(t="week", d="nope", ai="{ai}", date="x"),
        E2.format(t="hour", d="page", ai="{ai}", date="2025010912"),
        E3.format(t="day", ai="{ai}", date="20250109"),
        V1.format(ai="{ai}", date="bad"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        lambda w: {},
        lambda w: {"Authorization": "junk"},
        lambda w: {"Authorization": "Bearer "},
        lambda w: {"X-Client-Id": w.key.public_key, "Authorization": "Token junk"},
        lambda w: {"X-Client-Id": "other", "Authorization": w.token},
        lambda w: {"Authorization": "\u00e9\u4e2d".encode() * 5},
        lambda w: {"Authorization": w.token, "X-Client-Id": "\u00e9\u4e2d".encode()},
    ],
)
def test_auth_is_checked_before_parameters(
    world: World, url: str, headers: Callable[[World], dict[str, Any]]
) -> None:
    r = world.client.get(url.replace("{ai}", world.project.ai), headers=headers(world))
    assert_error(r, 401, "Unauthorized")


@pytest.mark.parametrize("ai", ["0123456789abcdef", "x", "%00", "%2e", "a" * 500])
def test_another_ai_is_401_whatever_the_parameters(world: World, ai: str) -> None:
    for url in (
        E2.format(t="week", d="page", ai=ai, date="x"),
        E3.format(t="hour", ai=ai, date="2025010912"),
        V1.format(ai=ai, date="20250109"),
    ):
        assert_error(world.client.get(url, headers=world.headers()), 401, "Unauthorized")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"content": b"project=&ai=&tm=&auth="},
        {"content": b"\xff\xfe\x00garbage"},
        {"content": b'{"project": {"x": 1}, "tm": 1e99}'},
        {"content": b"[1,2,3]"},
        {"params": {"tm": "9" * 5000, "project": "a", "ai": "b", "auth": "c"}},
        {"json": {"project": None, "ai": [], "tm": True, "auth": 1}},
        {"headers": {"X-Client-Id": "\u00e9\u4e2d".encode()}, "content": b"auth=x"},
        {"headers": {"Content-Type": "multipart/form-data; boundary=x"}, "content": b"--x--"},
    ],
)
def test_auth_token_bad_input(world: World, kwargs: dict[str, Any]) -> None:
    assert_error(world.client.post("/auth/token", **kwargs), 401, "Unauthorized")


def test_auth_token_too_large_and_wrong_method(world: World) -> None:
    assert_error(world.client.post("/auth/token", content=b"a" * 70_000), 413, "Payload Too Large")
    odd_client = {"X-Client-Id": "\u00e9\u4e2d".encode()}
    r = world.client.post("/auth/token", params=world.auth_params(), headers=odd_client)
    assert_error(r, 401, "Unauthorized")
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        assert_error(world.client.request(method, "/auth/token"), 405, "Method Not Allowed")


def test_wrong_methods_and_unknown_routes(world: World) -> None:
    ai = world.project.ai
    for url in (
        E2.format(t="hour", d="page", ai=ai, date="2025010912"),
        E3.format(t="hour", ai=ai, date="2025010912"),
        V1.format(ai=ai, date="20250109"),
        "/healthz",
        "/openapi.json",
        "/docs",
        "/abcd_0123456789abcdef_page_v2_202501100000/part-00000.csv.gz",
    ):
        assert_error(world.client.post(url), 405, "Method Not Allowed")
    for url in ("/v2", "/v2/insights", "/insights/x", "/v3/insights/hour/a/b.json", "/%00"):
        assert_error(world.client.get(url), 404, "Not Found")
        assert_error(world.client.post(url), 404, "Not Found")
    # `/` is the console's front door (issue 14): GET redirects there, POST is refused.
    r = world.client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    assert_error(world.client.post("/"), 405, "Method Not Allowed")


def test_download_errors(world: World) -> None:
    key = "abcd_0123456789abcdef_page_v2_202501100000/part-00000.csv.gz"
    for query in ("", "?expires=1&sign=x", "?expires=99999999999999&sign=", "?sign=&expires="):
        assert_error(world.client.get(f"/{key}{query}"), 403, "Forbidden")
        r = world.client.head(f"/{key}{query}")
        assert r.status_code == 403


def test_rate_limit_shape(make_world: Callable[..., World]) -> None:
    """429 only past the queue bound, with Retry-After and each endpoint's own envelope."""
    w = make_world(rate_limit=0.5, rate_burst=1, rate_queue=0)
    headers = {"Authorization": w.token}
    bad = E2.format(t="week", d="page", ai=w.project.ai, date="x")
    assert w.client.get(bad, headers=headers).status_code == 400
    for url, links_key, links in (
        (E2.format(t="day", d="page", ai=w.project.ai, date="20250110"), "downloadLinks", []),
        (f"/v2/insights/day/{w.project.ai}/20250110.json", "downloadLinks", None),
        (f"/insights/{w.project.ai}/20250110.json", "downlinks", []),
    ):
        r = w.client.get(url, headers=headers)
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "2"
        body = r.json()
        error = (
            body.get("errorMsg")
            if links_key == "downloadLinks"
            else r.headers.get("x-rawexport-error")
        )
        assert body["status"] == "ERROR" and "Too Many Requests" in unquote(str(error))
        if links is None:  # the all-types call: an object of empty lists
            assert body[links_key] and all(v == [] for v in body[links_key].values())
        else:
            assert body[links_key] == links
