"""GrowingIO's SDK traffic in-process: every route, encoding and event type, the answers the
SDKs expect, and the rows spec/GROWINGIO_COLLECT_SPEC.md §4 maps the events to."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cramjam
import lz4.block
import pytest

from rawexport.api.peers import client_address, parse_networks
from rawexport.ingest import joins
from tests.ingest.test_collectors import Site, make_site
from tests.ingest.test_lzstring import Oracle

CDP = "/v3/projects/{ai}/collect"
UA_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(scope="module")
def lz() -> Iterator[Oracle]:
    o = Oracle()
    yield o
    o.close()


def send(site: Site, path: str, body: bytes | str, **headers: str) -> Any:
    """As an SDK sends: no key, no Prefer header."""
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    return site.client.post(path.format(ai=site.project.ai), content=body, headers=h)


def one(site: Site, data_type: str) -> dict[str, Any]:
    [row] = site.rows(data_type)
    return {k: v for k, v in row.items() if v is not None}


WEB = {
    "appVersion": "1.0.0",
    "dataSourceId": "ds",
    "deviceId": "dev-1",
    "domain": "shop.example",
    "language": "zh-CN",
    "platform": "web",
    "query": "a=1",
    "referralPage": "https://ref.example/x",
    "screenHeight": 844,
    "screenWidth": 390,
    "sdkVersion": "4.3.1",
    "sessionId": "sess-1",
    "title": "Home",
}


def web(kind: str, at: int, path: str = "/home", **fields: Any) -> dict[str, Any]:
    return {**WEB, "eventType": kind, "timestamp": at, "path": path, **fields}


def test_cdp_web_events_every_type(site: Site, lz: Oracle) -> None:
    """The web SDK 4.x: one event per beacon, lz-string Uint8Array, no Content-Type."""
    events = [
        web("VISIT", 999),
        web("PAGE", 1000, attributes={"pg": "home"}),
        web("VIEW_CLICK", 1500, xpath="/div/a", textValue="Buy", index=2, hyperlink="/buy"),
        web("VIEW_CHANGE", 1600, xpath="/input"),
        web("FORM_SUBMIT", 1700, xpath="/form"),
        web("CUSTOM", 1800, eventName="buy", attributes={"price": 9.9, "tags": ["a", "b"]}),
        web("CONVERSION_VARIABLES", 1900, attributes={"campaign": "x"}),
        web("VISITOR_ATTRIBUTES", 2000, attributes={"age": 3}),
        web("LOGIN_USER_ATTRIBUTES", 2100, userId="u-1", attributes={"vip": True}),
        web("PAGE_ATTRIBUTES", 2200, attributes={"section": "s"}),
        web("APP_CLOSED", 2300),
    ]
    for event in events:
        body = lz.compress(json.dumps([event]))["uint8"]
        r = send(site, CDP + "?stm=1&compress=1", body, user_agent=UA_IPHONE, origin="https://x")
        assert r.status_code == 204 and r.content == b"", r.text
        assert r.headers["access-control-allow-origin"] == "https://x"
    visit = one(site, "visit")
    assert visit == {
        "visitUserId": "dev-1",
        "sessionId": "sess-1",
        "accountVersion": "4.3.1",
        "platform": "Web",
        "domain": "shop.example",
        "page": "/home",
        "queryParameters": "a=1",
        "referrer": "https://ref.example/x",
        "language": "zh-CN",
        "screenHeight": "844",
        "screenWidth": "390",
        "time": 999,
        "sendTime": visit["sendTime"],
        "userAgent": UA_IPHONE,
        "operatingSystem": "iOS",
        "operatingSystemVersion": "17.1",
        "deviceBrand": "Apple",
        "deviceModel": "iPhone",
        "deviceType": "1",
        "vstRequestId": joins.visit_id(site.project.ai, "dev-1", "sess-1"),
    }
    page = one(site, "page")
    page_id = joins.page_id(site.project.ai, "dev-1", "sess-1", "/home", 1000)
    assert page_id is not None and page_id.startswith("1000") and len(page_id) == 14
    assert len(joins.page_id("a", "v", "s", "/p", 1700000000000) or "") == 23  # GrowingIO's
    assert (page["pageRequestId"], page["vstRequestId"]) == (page_id, visit["vstRequestId"])
    assert (page["title"], page["referrer"], page["time"]) == (
        "Home",
        "https://ref.example/x",
        1000,
    )
    actions = sorted(site.rows("action"), key=lambda r: r["time"])
    assert [a["requestType"] for a in actions] == ["clck", "chng", "sbmt"]
    assert {a["pageRequestId"] for a in actions} == {page_id}  # linked: web sends no page time
    assert (actions[0]["href"], actions[0]["requestValue"], actions[0]["index"]) == (
        "/buy",
        "Buy",
        2,
    )
    assert all(a["actionRequestId"].startswith("wa:") for a in actions)
    assert len({a["actionRequestId"] for a in actions}) == 3
    custom = one(site, "custom_event")
    assert (custom["pageRequestId"], custom["pageTime"]) == (page_id, 1000)
    assert json.loads(custom["eventVariable"]) == {"price": "9.9", "tags": "a||b"}
    pvars = sorted(site.rows("pvar"), key=lambda r: r["time"])
    assert [(p["time"], json.loads(p["pageVariable"])) for p in pvars] == [
        (1000, {"pg": "home"}),  # a PAGE with attributes
        (2200, {"section": "s"}),
    ]
    assert {p["pageRequestId"] for p in pvars} == {page_id}
    assert json.loads(one(site, "evar")["conversionVariable"]) == {"campaign": "x"}
    vstr = sorted(site.rows("vstr"), key=lambda r: r["time"])
    assert [json.loads(v["visitorVariable"]) for v in vstr] == [
        {"age": "3"},
        {"vip": "true", "$loginUserId": "u-1"},
    ]


def test_cdp_answers_cors_preflight_and_report(site: Site) -> None:
    path = CDP.format(ai=site.project.ai)
    r = site.client.options(path, headers={"origin": "https://a.example"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://a.example"
    assert r.headers["vary"] == "Origin"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "X-Compress-Codec" in r.headers["access-control-allow-headers"]
    body = json.dumps([web("PAGE", 5), {"eventType": "CUSTOM"}, "x"])
    r = send(site, CDP, body, content_type="text/plain;charset=UTF-8")
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
    assert (r.headers["x-rawexport-accepted"], r.headers["x-rawexport-rejected"]) == ("1", "2")
    r = send(site, CDP, json.dumps([web("PAGE", 6)]), prefer="return=representation")
    assert r.status_code == 200 and r.json() == {"accepted": 1, "rejected": []}
    # every event rejected: still 2xx (the SDKs would re-send it for days otherwise)
    r = send(site, CDP, json.dumps([{"eventType": "NOPE"}]), prefer="return=representation")
    assert r.json()["rejected"] == [
        {"index": 0, "field": "eventType", "reason": "unsupported event type 'NOPE'"}
    ]


def test_image_get_takes_the_rest_of_the_query(site: Site, lz: Oracle) -> None:
    """The image fallback does not URI-encode its body: an `&` inside a value splits the
    query for a form parser; `#` cuts it (lost, answered 204 all the same)."""
    event = web("PAGE", 10, query="utm_source=trk&q=1", title="A+B C")
    raw = json.dumps([event], separators=(",", ":"))
    browser = quote(raw, safe="/:,&=+?[]{}@!$'()*;")  # what Chromium leaves of it
    assert "&q=1" in browser
    r = site.client.get(f"{CDP.format(ai=site.project.ai)}?stm=1&compress=0&data={browser}")
    assert r.status_code == 204
    page = one(site, "page")
    assert (page["queryParameters"], page["title"]) == ("utm_source=trk&q=1", "A+B C")
    uri = str(lz.compress(json.dumps([web("PAGE", 11, path="/uri")]))["uri"])
    r = site.client.get(f"{CDP.format(ai=site.project.ai)}?stm=1&compress=11&data={uri}")
    assert r.status_code == 204
    r = site.client.get(f"{CDP.format(ai=site.project.ai)}?stm=1&compress=0&data=%5B%7B%22ev")
    assert r.status_code == 204
    assert sorted(p["page"] for p in site.rows("page")) == ["/home", "/uri"]


def test_xhr_then_image_resend_is_stored_once(site: Site) -> None:
    event = web("CUSTOM", 20, eventName="e", eventSequenceId=7)
    body = json.dumps([event])
    assert send(site, CDP + "?stm=1&compress=0", body).status_code == 204
    r = site.client.get(f"{CDP.format(ai=site.project.ai)}?stm=2&compress=0&data={quote(body)}")
    assert r.status_code == 204
    assert len(site.rows("custom_event")) == 1
    again = json.dumps([{**event, "eventSequenceId": 8}])  # a new event, same content else
    assert send(site, CDP, again).status_code == 204
    assert len(site.rows("custom_event")) == 2


SAAS_EVENTS: list[dict[str, Any]] = [
    {
        "t": "vst",
        "u": "m-1",
        "s": "ms-1",
        "tm": 100,
        "d": "com.shop",
        "p": "Main",
        "l": "zh",
        "sh": 2400,
        "sw": 1080,
        "db": "Xiaomi",
        "dm": "M2",
        "ph": 1,
        "os": "Android",
        "osv": "13",
        "cv": "2.0",
        "av": "2.8.9",
        "ch": "store",
        "lat": 30.5,
        "lng": 0,
        "imei": "i-1",
        "adrid": "a-1",
    },  # fmt: skip
    {
        "t": "page",
        "u": "m-1",
        "s": "ms-1",
        "tm": 200,
        "d": "com.shop",
        "p": "Main",
        "rp": "Splash",
        "o": "PORTRAIT",
        "tl": "Main",
        "cs1": "login-1",
        "var": {"k": 1},
    },  # fmt: skip
    {
        "t": "clck",
        "u": "m-1",
        "s": "ms-1",
        "tm": 300,
        "d": "com.shop",
        "p": "Main",
        "ptm": 200,
        "e": [
            {"x": "/btn", "v": "OK", "idx": 0, "h": "https://h", "tm": 301},
            {"x": "/btn2", "v": "No", "obj": {"id": 3}},
        ],
    },  # fmt: skip
    {
        "t": "cstm",
        "u": "m-1",
        "s": "ms-1",
        "tm": 400,
        "p": "Main",
        "ptm": 200,
        "n": "pay",
        "num": 3,
        "var": {"amount": 5},
        "cs1": "login-1",
    },  # fmt: skip
    {"t": "pvar", "u": "m-1", "s": "ms-1", "tm": 401, "p": "Main", "ptm": 200, "var": {"a": "b"}},
    {"t": "evar", "u": "m-1", "s": "ms-1", "tm": 402, "var": {"e": "v"}},
    {"t": "vstr", "u": "m-1", "s": "ms-1", "tm": 403, "var": {"v": "w"}},
    {"t": "ppl", "u": "m-1", "s": "ms-1", "tm": 404, "cs1": "login-1", "var": {"p": "q"}},
    {"t": "imp", "u": "m-1", "s": "ms-1", "tm": 405, "e": [{"x": "/i"}]},
    {"t": "cls", "u": "m-1", "s": "ms-1", "tm": 406},
    {"t": "reengage", "u": "m-1", "tm": 407, "link_id": "L"},
]


def test_saas_android_every_type_snappy_xor(site: Site) -> None:
    """SaaS Android 2.x: JSON -> snappy -> XOR, both codec headers, no Content-Type; the
    SDK takes exactly 200."""
    stm = 1700000000123
    raw = bytes(cramjam.snappy.compress_raw(json.dumps(SAAS_EVENTS).encode()))
    body = bytes(b ^ (stm & 0xFF) for b in raw)
    r = send(
        site, f"/v3/{{ai}}/android/pv?stm={stm}", body, x_compress_codec="2", x_crypt_codec="1"
    )
    assert r.status_code == 200
    assert r.json() == {"accepted": 11, "rejected": [], "notExported": 3}
    ai = site.project.ai
    visit = one(site, "visit")
    assert {k: visit[k] for k in visit if k not in ("sendTime",)} == {
        "visitUserId": "m-1",
        "sessionId": "ms-1",
        "accountVersion": "2.8.9",
        "platform": "Android",
        "domain": "com.shop",
        "page": "Main",
        "language": "zh",
        "screenHeight": "2400",
        "screenWidth": "1080",
        "time": 100,
        "operatingSystem": "Android",
        "operatingSystemVersion": "13",
        "clientVersion": "2.0",
        "channel": "store",
        "deviceBrand": "Xiaomi",
        "deviceModel": "M2",
        "deviceType": "1",
        "latitude": 30.5,
        "vstRequestId": joins.visit_id(ai, "m-1", "ms-1"),
        "androidId": "a-1",
        "IMEI": "i-1",
    }
    page = one(site, "page")
    page_id = joins.page_id(ai, "m-1", "ms-1", "Main", 200)
    assert (page["referrerPage"], page["deviceOrientation"], page["loginUserId"]) == (
        "Splash",
        "PORTRAIT",
        "login-1",
    )
    assert (page["pageRequestId"], page["appVariable"]) == (page_id, '{"k":"1"}')
    actions = sorted(site.rows("action"), key=lambda r: r["time"])
    assert [(a["time"], a["requestValue"], a["index"], a["info"]) for a in actions] == [
        (300, "No", None, '{"id":3}'),
        (301, "OK", 0, None),
    ]
    assert {a["pageRequestId"] for a in actions} == {page_id}
    assert all(a["actionRequestId"].startswith("ma:") for a in actions)
    custom = one(site, "custom_event")
    assert (custom["eventNumber"], custom["pageRequestId"], custom["eventVariable"]) == (
        3.0,
        page_id,
        '{"amount":"5"}',
    )
    assert one(site, "pvar")["pageRequestId"] == page_id
    assert one(site, "evar")["conversionVariable"] == '{"e":"v"}'
    vstr = sorted(site.rows("vstr"), key=lambda r: r["time"])
    assert [v["visitorVariable"] for v in vstr] == [
        '{"v":"w"}',
        '{"p":"q","$loginUserId":"login-1"}',
    ]


def test_saas_ios_lz4_and_activation_route(site: Site) -> None:
    events = [{"t": "cstm", "u": "i-1", "s": "is-1", "tm": 5, "n": "tap"}]
    stm = 1700000000777
    raw = lz4.block.compress(json.dumps(events).encode(), store_size=False)
    body = bytes(b ^ (stm & 0xFF) for b in raw)
    r = send(
        site,
        f"/v3/{{ai}}/ios/cstm?stm={stm}",
        body,
        x_compress_codec="3",
        x_crypt_codec="1",
        content_type="application/octet-stream",
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1
    activate = [{"t": "activate", "u": "i-1", "tm": 6, "ui": "IDFA", "iv": "IDFV", "osv": "17",
                 "link_id": "L1", "var": {"utm": "x"}}]  # fmt: skip
    r = send(site, "/app/{ai}/ios/ctvt?stm=1", json.dumps(activate), user_agent="GrowingIO/2")
    assert r.status_code == 200 and r.json() == {"accepted": 1, "rejected": []}
    row = one(site, "ads_track_activation")
    assert {k: row[k] for k in row if k != "sendTime"} == {
        "visitUserId": "i-1",
        "idfa": "IDFA",
        "uuid": "IDFV",
        "userAgent": "GrowingIO/2",
        "platform": "iOS",
        "operatingSystemVersion": "17",
        "linkId": "L1",
        "adsVariable": '{"utm":"x"}',
    }


def test_saas_android_debug_mode_lies_about_its_encoding(site: Site) -> None:
    """Debug mode sends plain JSON but keeps both codec headers."""
    body = json.dumps([{"t": "cstm", "u": "d", "s": "s", "tm": 1, "n": "dbg"}])
    r = send(site, "/v3/{ai}/android/cstm?stm=99", body, x_compress_codec="2", x_crypt_codec="1")
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert one(site, "custom_event")["eventName"] == "dbg"


def test_mini_program_lz_utf16(site: Site, lz: Oracle) -> None:
    events = [{**web("PAGE", 7, path="pages/index"), "platform": "MinP", "deviceId": "mini"}]
    body = str(lz.compress(json.dumps(events))["utf16"]).encode()
    r = send(
        site,
        CDP + "?stm=1&compress=1",
        body,
        x_compress_codec="1",
        content_type="application/json;charset=UTF-8",
    )
    assert r.status_code == 204 and r.headers["x-rawexport-accepted"] == "1"
    page = one(site, "page")
    assert (page["platform"], page["page"], page["referrerPage"]) == (
        "MinP",
        "pages/index",
        "https://ref.example/x",
    )


def test_s2s_and_login_only_events_link_to_the_login_users_visitor(site: Site) -> None:
    page = {"t": "page", "u": "vis-9", "s": "s-9", "tm": 1_000_000, "p": "P", "cs1": "member"}
    assert send(site, "/v3/{ai}/android/pv", json.dumps([page])).status_code == 200
    s2s = [
        {"t": "cstm", "tm": 1_000_500, "n": "order", "cs1": "member", "var": {"x": ["1", "2"]}},
        {"t": "cstm", "tm": 1_000_600, "n": "order", "cs1": "stranger"},
    ]
    r = send(site, "/v3/{ai}/s2s/cstm/?stm=1", json.dumps(s2s), content_type="application/json")
    assert r.status_code == 200 and r.json()["accepted"] == 2
    cdp = {"eventType": "CUSTOM", "eventName": "srv", "userId": "member", "timestamp": 1_000_700}
    assert send(site, CDP, json.dumps([cdp])).status_code == 204
    rows = sorted(site.rows("custom_event"), key=lambda r: r["time"])
    assert [(r["visitUserId"], r["sessionId"], r["loginUserId"]) for r in rows] == [
        ("vis-9", "s-9", "member"),
        (None, None, "stranger"),
        ("vis-9", "s-9", "member"),
    ]
    assert rows[0]["eventVariable"] == '{"x":"1||2"}'


def test_custom_routes_headerless_snappy_and_lenient_keys(site: Site) -> None:
    """GrowingIOSDK (py2): snappy with no codec header, text/plain, its own X-Client-Id."""
    events = [{"e": {"tags": ["a", "b"], "qty": 2}, "ai": site.project.ai, "t": "cstm",
               "n": "py2", "tm": 9, "u": "pv", "s": "ps", "cs1": "user:1", "sdk_type": "python",
               "sdk_version": "1.0.1"}]  # fmt: skip
    body = bytes(cramjam.snappy.compress_raw(json.dumps(events).encode()))
    r = send(site, "/custom/{ai}/events?stm=9", body, content_type="text/plain", x_client_id="X")
    assert r.status_code == 200 and r.json()["accepted"] == 1
    row = one(site, "custom_event")
    assert (row["eventVariable"], row["loginUserId"]) == ('{"tags":"a||b","qty":"2"}', "1")
    other = site.catalog.create_key_pair(site.catalog.create_project("other").id)
    r = send(site, "/custom/{ai}/events", body, x_client_id=other.public_key)
    assert r.status_code == 403  # a key rawexport knows, of another project


@pytest.mark.parametrize(
    "path",
    [
        "/v3/{ai}/web/pv",
        "/v2/{ai}/web/action",
        "/v2/{ai}/andorid/events",
        "/custom/{ai}/andorid/events",
        "/custom/{ai}/web/events",
        "/projects/{ai}/apps/wx123/collect",
        "/v3/{ai}/s2s/cstm",
    ],
)
def test_every_saas_route_answers_200(site: Site, path: str) -> None:
    event = {"t": "cstm", "u": "v", "s": "s", "tm": 3, "n": path.split("/")[-1]}
    r = send(site, path + "?stm=3", json.dumps([event]))
    assert r.status_code == 200 and r.json() == {"accepted": 1, "rejected": []}
    assert r.headers["access-control-allow-origin"] == "*"
    assert len(site.rows("custom_event")) == 1
    assert site.client.options(path.format(ai=site.project.ai)).status_code == 200


def test_items_and_user_mappings_are_taken_not_exported(site: Site) -> None:
    items = b"\x12\x17\x0a\x0242\x12\x03sku\x1a\x0c\x0a\x05color\x12\x03red"
    r = send(site, "/projects/{ai}/collect/item", items, content_type="application/protobuf")
    assert r.status_code == 204 and r.headers["x-rawexport-accepted"] == "1"
    json_items = json.dumps([{"id": "42", "key": "sku", "attributes": {"color": "red"}}])
    r = send(site, "/projects/{ai}/collect/item?stm=1", json_items)
    assert r.status_code == 204
    mapping = b"\x0a\x06\x0a\x02pk\x10\x01"
    r = send(
        site, "/projects/{ai}/collect/user-mapping", mapping, content_type="application/protobuf"
    )
    assert r.status_code == 204
    assert r.headers["x-rawexport-accepted"] == "1"


def test_legacy_android_activation_get(site: Site) -> None:
    r = site.client.get(
        f"/{site.project.ai}/android/devices?u=dev&dm=M&osv=9&t=activate&tm=5&imei=I&adrid=A"
    )
    assert r.status_code == 200
    row = one(site, "ads_track_activation")
    assert (row["visitUserId"], row["imei"], row["androidId"], row["platform"]) == (
        "dev",
        "I",
        "A",
        "Android",
    )


def test_client_address_behind_trusted_proxies() -> None:
    trusted = parse_networks("10.0.0.0/8, 127.0.0.1")
    xff = {"x-forwarded-for": "198.51.100.7, 203.0.113.5, 10.1.1.1"}
    assert client_address("127.0.0.1", xff, trusted) == "203.0.113.5"
    assert client_address("192.0.2.1", xff, trusted) == "192.0.2.1"  # not a trusted peer
    assert client_address("127.0.0.1", xff, []) == "127.0.0.1"
    assert client_address("10.2.2.2", {"x-real-ip": "2001:db8::1"}, trusted) == "2001:db8::1"
    assert client_address("10.2.2.2", {"x-forwarded-for": "junk"}, trusted) == "10.2.2.2"
    assert client_address("testclient", {}, trusted) is None


def test_visit_ip_from_the_proxy_header(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from rawexport.api.collect import collector_routes

    s = make_site(tmp_path, trusted_proxies="127.0.0.0/8")
    app = Starlette(routes=collector_routes(s.settings, s.catalog, s.ingestor))
    with TestClient(app, client=("127.0.0.1", 5000)) as client:
        body = json.dumps([web("VISIT", 1)])
        headers = {"x-forwarded-for": "2001:db8::7"}
        path = CDP.format(ai=s.project.ai)
        assert client.post(path, content=body, headers=headers).status_code == 204
    assert one(s, "visit")["ip"] == "2001:db8::7"  # kept whole, longer than the column's 15
    s.ingestor.stop()


def test_pages_and_logins_link_across_nodes_and_restarts(tmp_path: Path) -> None:
    """Two nodes on one catalog: a page shown to node A, its click and a login-only server
    event sent to node B (or to A after a restart) are linked all the same."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from rawexport.api.collect import collector_routes

    a = make_site(tmp_path)
    app_b = Starlette(routes=collector_routes(a.settings, a.catalog, a.ingestor))
    page = web("PAGE", 1_000, path="/cart", userId="member-7")
    assert send(a, CDP, json.dumps([page])).status_code == 204
    deadline = time.monotonic() + 10  # node A writes its links every 0.1 s
    key = joins.link_key("dev-1", "sess-1", "/cart")
    while a.catalog.latest_link(a.project.ai, "page", key, None) is None:
        assert time.monotonic() < deadline, "node A never wrote the page's link"
        time.sleep(0.05)
    click = web("VIEW_CLICK", 1_500, path="/cart", xpath="/b")
    server = {"eventType": "CUSTOM", "eventName": "paid", "userId": "member-7", "timestamp": 2_000}
    with TestClient(app_b) as b:
        path = CDP.format(ai=a.project.ai)
        assert b.post(path, content=json.dumps([click, server])).status_code == 204
    page_id = joins.page_id(a.project.ai, "dev-1", "sess-1", "/cart", 1_000)
    assert one(a, "action")["pageRequestId"] == page_id
    custom = one(a, "custom_event")
    assert (custom["visitUserId"], custom["sessionId"]) == ("dev-1", "sess-1")
    a.ingestor.stop()
