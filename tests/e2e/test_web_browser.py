"""GrowingIO's web SDK 4.x transports, from a real headless Chromium (Debian's, driven by
Playwright) on another origin, against a real `rawexport serve`: lz-string beacons with no
Content-Type, a cross-origin text/plain XHR that must be answered 204 with CORS headers, and
image GETs with a raw JSON (compress=0, an `&` inside a value) or a URI-safe lz-string
(compress=11) `data=`. Each event is then found exactly once in the export of its type.

GrowingIO's gdp-full.js is not on npm, so the page sends the events the way it does
(spec/GROWINGIO_COLLECT_SPEC.md §1.2), with npm's lz-string, the library its compress plugin
bundles."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, sync_playwright

from rawexport.timeutil import HOUR_MS, now_ms
from tests.e2e.test_ingest import export_rows
from tests.e2e_util import Server, env_for, free_port, run_cli

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
LZ_STRING = REPO / ".venv" / "js" / "node_modules" / "lz-string" / "libs" / "lz-string.min.js"
WAIT_S = 20.0
QUERY = "a=1&b=2"  # the page's own query: every event carries it, an `&` inside a JSON value
NON_ASCII = "绿茶 · 500ml"
REFERRER = "http://referrer.example/landing?x=1"

# The page: sends events as gdp-full.js 4.3.1 does (W4 `src/core/uploader.ts`), one event
# per request, `JSON.stringify([event])`, to `{serverUrl}/v3/projects/{ai}/collect`.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Shop · 商店</title>
<script src="/lz-string.min.js"></script>
<script>
const CONFIG = __CONFIG__;
let sequence = 0;
let pageTime = null;
window.sent = [];
window.problems = [];
window.addEventListener("error", (e) => window.problems.push(String(e.message)));

function common(eventType, extra, timestamp) {
  // key order as the SDK builds them: the type's own fields first, then the context
  return Object.assign({eventType: eventType}, extra, {
    appVersion: "1.0.0",
    dataSourceId: CONFIG.dataSourceId,
    deviceId: CONFIG.deviceId,
    domain: location.host,
    language: navigator.language,
    path: location.pathname,
    platform: "web",
    query: location.search.slice(1),
    referralPage: document.referrer,
    screenHeight: screen.height,
    screenWidth: screen.width,
    sdkVersion: "4.3.1",
    sessionId: CONFIG.sessionId,
    timestamp: timestamp,
    timezoneOffset: new Date().getTimezoneOffset(),
    title: document.title,
  });
}

function event(eventType, extra, timestamp) {
  const e = common(eventType, extra, timestamp === undefined ? Date.now() : timestamp);
  e.eventSequenceId = ++sequence;
  window.sent.push(e);
  return e;
}

function url(compress) {
  return CONFIG.server + "/v3/projects/" + CONFIG.ai + "/collect?stm=" + Date.now()
    + "&compress=" + compress;
}

function beacon(e) {
  // a Uint8Array body: the browser sends it with no Content-Type
  const body = LZString.compressToUint8Array(JSON.stringify([e]));
  return {transport: "beacon", eventType: e.eventType, queued: navigator.sendBeacon(url(1), body)};
}

function xhr(e) {
  return new Promise((resolve) => {
    const x = new XMLHttpRequest();
    const done = (outcome) => resolve(
      {transport: "xhr", eventType: e.eventType, outcome: outcome, status: x.status});
    x.open("POST", url(0), true);
    x.setRequestHeader("Content-Type", "text/plain;charset=UTF-8");
    x.timeout = 5000;
    x.onload = () => done("load");
    x.onerror = () => done("error");
    x.ontimeout = () => done("timeout");
    x.onabort = () => done("abort");
    x.send(JSON.stringify([e]));
  });
}

function image(e, compress) {
  return new Promise((resolve) => {
    const json = JSON.stringify([e]);
    // compress=0: the JSON itself, not URI-encoded (the browser encodes `"`, spaces and
    // non-ASCII, not `&`); compress=11: lz-string's URI-safe alphabet
    const data = compress === 11 ? LZString.compressToEncodedURIComponent(json) : json;
    const img = new Image();
    let settled = false;
    const done = (outcome) => {
      if (!settled) {
        settled = true;
        resolve({transport: "image", eventType: e.eventType, compress: compress,
                 outcome: outcome});
      }
    };
    img.onload = () => done("load");  // the SDK takes load, error and abort as sent
    img.onerror = () => done("error");
    img.onabort = () => done("abort");
    setTimeout(() => done("timeout"), 5000);
    img.src = url(compress) + "&data=" + data;
  });
}

// The page view: VISIT (page time - 1) and PAGE, by beacon.
window.sendPageView = () => {
  pageTime = Date.now();
  const visit = event("VISIT", {}, pageTime - 1);
  const page = event("PAGE", {}, pageTime);
  page.protocolType = location.protocol.replace(":", "");
  return [beacon(visit), beacon(page)];
};

// What the visitor does on that page afterwards, each by the transport under test.
window.sendInteractions = async () => {
  const results = [];
  results.push(beacon(event("CUSTOM", {
    eventName: "add_to_cart",
    attributes: {product: CONFIG.nonAscii, price: "9.9", tags: "a||b"},
  })));
  results.push(await xhr(event("VIEW_CLICK", {
    xpath: "/html/body/div/a", xcontent: "/#buy", textValue: "Buy now", index: 1,
    hyperlink: "/cart.html?from=shop&x=1",
  })));
  // no `#` in it: the browser would cut the URL there and the event be lost (spec §1.2)
  results.push(await image(event("VIEW_CHANGE", {
    xpath: "/html/body/form/input", xcontent: "/.search", textValue: "salt & pepper",
  }), 0));
  results.push(await image(event("CUSTOM", {
    eventName: "search_done",
    attributes: {term: "salt & pepper", hits: "12", note: "café 咖啡 +1"},
  }), 11));
  return results;
};
</script></head>
<body><div><a id="buy" href="#">Buy now</a></div><form><input class="search"></form></body>
</html>
"""

INGESTED = re.compile(r'^rawexport_ingest_events_total\{outcome="(\w+)"\} (\S+)$', re.M)


def ingest_counts(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m[1]: float(m[2]) for m in INGESTED.finditer(text)}


def wait_counted(base: str, count: int) -> dict[str, float]:
    """The ingest counts once `count` events were counted (accepted or not), bounded."""
    deadline = time.monotonic() + WAIT_S
    counts: dict[str, float] = {}
    while time.monotonic() < deadline:
        counts = ingest_counts(base)
        if sum(counts.values()) >= count:
            return counts
        time.sleep(0.1)
    raise AssertionError(f"rawexport did not count {count} events within {WAIT_S} s: {counts}")


@contextlib.contextmanager
def page_server(files: dict[str, tuple[str, bytes]]) -> Iterator[str]:
    """A static site on 127.0.0.1 (another port, so another origin), until exit."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = files.get(urlsplit(self.path).path)
            if found is None:
                self.send_error(404)
                return
            content_type, body = found
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make system-deps` installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def test_web_sdk_transports_from_a_browser_are_exported_once(tmp_path: Path) -> None:
    if not LZ_STRING.is_file():
        pytest.fail(f"{LZ_STRING} is missing: `make js-deps` installs npm's lz-string")
    home, port = tmp_path / "home", free_port()
    env = env_for(home, port)
    ai = str(run_cli(["project", "create", "--name", "web"], env)["ai"])
    device, session = str(uuid.uuid4()), str(uuid.uuid4())
    console: list[str] = []
    start = now_ms()
    with (
        Server(["serve"], env, port, tmp_path / "serve.log") as server,
        chromium() as browser,
    ):
        server.wait_ready()
        config = {
            "server": server.base,
            "ai": ai,
            "dataSourceId": "a1b2c3d4e5f60718",
            "deviceId": device,
            "sessionId": session,
            "nonAscii": NON_ASCII,
        }
        html = PAGE.replace("__CONFIG__", json.dumps(config)).encode()
        files = {
            "/shop.html": ("text/html; charset=utf-8", html),
            "/lz-string.min.js": ("text/javascript", LZ_STRING.read_bytes()),
        }
        with page_server(files) as site:
            context = browser.new_context()
            try:
                context.set_default_timeout(WAIT_S * 1000)
                page = context.new_page()
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                page.goto(f"{site}/shop.html?{QUERY}", referer=REFERRER, wait_until="load")
                user_agent = str(page.evaluate("navigator.userAgent"))
                # the page view first: the SDK sends no page time, so later events are
                # linked to the page rawexport has seen (spec §4.3)
                viewed: list[dict[str, Any]] = page.evaluate("window.sendPageView()")
                assert [r["queued"] for r in viewed] == [True, True], (viewed, console)
                counts = wait_counted(server.base, 2)
                assert counts.get("accepted") == 2, counts
                done: list[dict[str, Any]] = page.evaluate("window.sendInteractions()")
                sent: list[dict[str, Any]] = page.evaluate("window.sent")
                problems: list[str] = page.evaluate("window.problems")
            finally:
                context.close()
        counts = wait_counted(server.base, 6)
    end = now_ms()

    assert problems == [], (problems, console)
    beacon, clicked, changed, searched = done
    assert beacon == {"transport": "beacon", "eventType": "CUSTOM", "queued": True}
    # the XHR answered across origins: onload fired (no CORS error), with the 204 it takes
    assert (clicked["outcome"], clicked["status"]) == ("load", 204), (clicked, console)
    assert not [m for m in console if "CORS" in m or "Access-Control" in m], console
    for img in (changed, searched):
        assert img["outcome"] in ("load", "error"), (img, console)  # answered, no timeout
    assert counts == {"accepted": 6, "rejected": 0, "not_exported": 0, "duplicate": 0}, counts

    by_type = {e["eventType"]: e for e in sent}
    customs = {e["eventName"]: e for e in sent if e["eventType"] == "CUSTOM"}
    assert len(sent) == 6 and len(by_type) == 5 and len(customs) == 2, sent
    hours = {start - start % HOUR_MS, end - end % HOUR_MS}
    rows = {
        t: export_rows(env, home, ai, t, hours) for t in ("visit", "page", "custom_event", "action")
    }
    for data_type, type_rows in rows.items():
        for row in type_rows:
            assert (row["visitUserId"], row["sessionId"]) == (device, session), (data_type, row)

    [visit] = rows["visit"]
    v = by_type["VISIT"]
    assert visit["userAgent"] == user_agent, visit
    assert visit["ip"] == "127.0.0.1", visit
    assert visit["time"] == str(v["timestamp"]), visit
    assert (visit["domain"], visit["page"], visit["queryParameters"]) == (
        v["domain"],
        "/shop.html",
        QUERY,
    ), visit
    assert visit["accountVersion"] == "4.3.1", visit
    assert v["referralPage"].startswith("http://referrer.example/"), v  # document.referrer
    assert visit["referrer"] == v["referralPage"], visit

    [page_row] = rows["page"]
    p = by_type["PAGE"]
    assert page_row["time"] == str(p["timestamp"]), page_row
    assert (page_row["page"], page_row["queryParameters"], page_row["title"]) == (
        "/shop.html",
        QUERY,
        "Shop · 商店",
    ), page_row
    assert page_row["referrer"] == p["referralPage"], page_row
    page_request = page_row["pageRequestId"]
    assert re.fullmatch(rf"{p['timestamp']}[0-9a-f]{{10}}", page_request), page_row

    custom = {r["eventName"]: r for r in rows["custom_event"]}
    assert len(rows["custom_event"]) == 2 and sorted(custom) == sorted(customs), custom
    for name, row in custom.items():
        e = customs[name]
        assert row["time"] == str(e["timestamp"]), row
        assert json.loads(row["eventVariable"]) == e["attributes"], row
        assert (row["page"], row["queryParameters"]) == ("/shop.html", QUERY), row
        assert row["pageRequestId"] == page_request, (row, page_row)
    assert NON_ASCII in custom["add_to_cart"]["eventVariable"], custom["add_to_cart"]
    assert "café 咖啡 +1" in custom["search_done"]["eventVariable"], custom["search_done"]

    action = {r["requestType"]: r for r in rows["action"]}
    assert len(rows["action"]) == 2 and sorted(action) == ["chng", "clck"], rows["action"]
    click, change = by_type["VIEW_CLICK"], by_type["VIEW_CHANGE"]
    assert action["clck"]["time"] == str(click["timestamp"]), action["clck"]
    assert (action["clck"]["href"], action["clck"]["requestValue"]) == (
        "/cart.html?from=shop&x=1",
        "Buy now",
    ), action["clck"]
    # the image's raw JSON had an `&` in its query and its value: read whole all the same
    assert action["chng"]["time"] == str(change["timestamp"]), action["chng"]
    assert (action["chng"]["page"], action["chng"]["requestValue"]) == (
        "/shop.html",
        "salt & pepper",
    ), action["chng"]
    for row in action.values():
        assert row["pageRequestId"] == page_request, (row, page_row)
        assert row["actionRequestId"].startswith("wa:"), row
